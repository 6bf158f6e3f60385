"""Study extrapolation-sinusoid on the tiny budget, as CI runs it: the report's tables and plots exist and hold
the numbers computed, every learner saw the same tasks, and the in-distribution cell agrees with `metalab eval`."""

import csv
import math

import numpy as np
import pytest
import torch
from conftest import run_tiny_study

from metalab.config import Config
from metalab.data.episode import fixed_episodes
from metalab.data.sinusoid import SinusoidTasks
from metalab.evaluation.checkpoints import evaluate_checkpoint
from metalab.studies.sinusoid_shift import AMPLITUDE_BINS, REGIONS, TINY_BINS, Bin, shifted_tasks
from metalab.studies.tables import estimate_cell

LEARNERS = ("maml-lr0.001", "snail", "metanet", "average")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("extrapolation-sinusoid")
    return (out, *run_tiny_study("extrapolation-sinusoid", out))


def test_every_learner_and_bin_is_a_cell_and_the_rows_are_the_scores_means(study):
    _, cells, _ = study
    assert set(cells) == {f"{m}__{b.axis}={b.name}" for m in LEARNERS for b in TINY_BINS}
    for key, cell in cells.items():
        steps = [row["steps"] for row in cell["rows"]]
        assert steps == ([5, 100] if key.startswith("maml") else [0]), key
        for row in cell["rows"]:
            values = cell["scores_after"][str(row["steps"])]
            assert len(values) == row["n"] == 20
            assert row["mean"] == pytest.approx(np.mean(values), rel=1e-12)
            assert row["ci95"] == pytest.approx(1.96 * np.std(values, ddof=1) / math.sqrt(20), rel=1e-9)
            assert cell["by_step"][row["steps"]]["mean"] == row["mean"]  # the inner-steps curve, the same numbers
        assert len(cell["by_step"]) == (101 if key.startswith("maml") else 1)


def test_the_report_tables_and_files_hold_the_numbers(study):
    out, cells, report = study
    for name in ("mse_vs_amplitude.png", "mse_vs_phase.png", "mse_vs_inner_steps.png"):
        assert (out / name).stat().st_size > 10_000 and f"]({name})" in report
    for model in LEARNERS:
        for row in (r for region in REGIONS for r in cells[f"{model}__region={region.name}"]["rows"]):
            shown = estimate_cell(row["mean"], row["ci95"], "MSE") if math.isfinite(row["mean"]) else "not finite"
            assert shown in report
    assert "| maml (theirs: Finn & Levine 2018) | 5 | 0.047 | 4.32 | 1.2 |" in report
    assert "| snail (theirs: Finn & Levine 2018) | none | - | 4.86 | 8.13 |" in report
    with open(out / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == sum(len(cell["rows"]) for cell in cells.values())
    first = next(r for r in table if r["cell"] == "average__region=amplitude-5-10")
    assert float(first["mean"]) == cells["average__region=amplitude-5-10"]["rows"][0]["mean"]


def test_a_bins_tasks_are_the_same_for_every_learner_and_within_its_ranges():
    where = AMPLITUDE_BINS[-1]
    trained_at_ten = Config(problem="sinusoid", shots=10, queries=10)  # the learners' own shots do not matter
    tasks = shifted_tasks(trained_at_ten, where)
    assert tasks == shifted_tasks(Config(problem="sinusoid", shots=5), where) == SinusoidTasks(5, 100, (9, 10),
                                                                                                (0, math.pi))
    episode = next(fixed_episodes(tasks, 0, 50))
    amplitude = episode.query_y.abs().amax(dim=(1, 2))  # 100 points over [-5, 5] reach near the peak
    assert torch.all(amplitude <= 10) and torch.all(amplitude > 8.5)
    assert Bin("phase", "x", (0.1, 5.0), (math.pi, 1.25 * math.pi)).centre == pytest.approx(1.125 * math.pi)


def test_the_in_distribution_cell_is_what_metalab_eval_reports(study):
    out, cells, _ = study
    result = evaluate_checkpoint(out / "train" / "maml" / "best.pt", shots=5, steps=100, episodes=20, seed=0,
                                 threads=1)
    for row in cells["maml-lr0.001__region=in-distribution"]["rows"]:
        assert result["after_steps"][row["steps"]]["mean"] == pytest.approx(row["mean"], rel=1e-6)
