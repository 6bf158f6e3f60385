"""Study depth: the learners' parameter counts at the budget, a depth-3 MAML that learns on cubic polynomials,
and the tiny study, as CI runs it: the report's table and plot exist and hold the numbers computed."""


import numpy as np
import pytest
from conftest import run_tiny_study

from metalab.models.networks import reinitialize
from metalab.studies.depth import BUDGET, DEPTHS, evaluation_tasks, learners, maml_config
from metalab.studies.models import episode_scores, load_study_model
from metalab.studies.parameter_budget import model_parameters
from metalab.studies.study import StudySettings, train_run
from metalab.studies.tables import estimate_cell


def test_every_learner_is_within_a_few_percent_of_the_budget():
    configs = learners()
    assert BUDGET == 751
    assert [configs[f"maml-{d}-layers"].hidden_layers for d in DEPTHS] == list(DEPTHS)
    assert [configs[f"maml-{d}-layers"].hidden for d in DEPTHS] == [250, 25, 18, 15, 13]
    counts = {name: model_parameters(config) for name, config in configs.items()}
    assert counts == {"maml-1-layers": 751, "maml-2-layers": 726, "maml-3-layers": 739, "maml-4-layers": 766,
                      "maml-5-layers": 768, "average": 743, "lstm": 757, "snail": 781}
    assert all(abs(count - BUDGET) / BUDGET <= 0.04 for count in counts.values())
    assert all(c.problem == "polynomial" and c.shots == 40 for c in configs.values())


@pytest.mark.slow
def test_a_depth_3_maml_learns_cubic_regression(tmp_path):
    config = maml_config(3).replace(steps=150, meta_batch_size=10, val_every=150, checkpoint_every=150,
                                    val_episodes=20, threads=1, log_every=50)
    best = train_run(config, tmp_path / "maml-3")
    settings = StudySettings(episodes=100, seed=5, threads=1, budget="tiny")
    model = load_study_model(best, settings)
    assert model.config.hidden_layers == 3 and model.config.hidden == 18
    trained = episode_scores(model, evaluation_tasks(model.config), settings)[-1]
    reinitialize(model.learner.model, config.seed)  # the initialization training started from
    start = model.method.init_meta()
    untrained = episode_scores(model, evaluation_tasks(model.config), settings, meta=start)[-1]
    assert np.mean(trained) < 0.8 * np.mean(untrained), (np.mean(trained), np.mean(untrained))


def test_the_tiny_study_reports_the_numbers_it_computed(tmp_path):
    cells, report = run_tiny_study("depth", tmp_path)
    names = {"maml-1x250", "maml-2x25", "maml-3x18", "maml-4x15", "maml-5x13", "average", "lstm", "snail"}
    assert set(cells) == names
    for name, cell in cells.items():
        (row,) = cell["rows"]
        assert row["mean"] == pytest.approx(np.mean(cell["scores"]), rel=1e-12) and row["n"] == 20
        assert row["steps"] == (5 if name.startswith("maml") else 0)
        assert f"| {name} |" in report and estimate_cell(row["mean"], row["ci95"], "MSE") in report
        assert f"{row['parameters']} ({100 * (row['parameters'] - 751) / 751:+.1f}%)" in report
    assert (tmp_path / "mse_vs_depth.png").stat().st_size > 10_000 and "](mse_vs_depth.png)" in report
