"""`metalab study more-steps --train tiny`: every curve on `metalab eval`'s episodes, and in the report."""


import numpy as np
import pytest
import torch
from conftest import run_tiny_study

from metalab.evaluation.checkpoints import evaluate_checkpoint
from metalab.studies.more_steps import TEST_STEPS
from metalab.studies.more_steps_fixes import clipped_rates
from metalab.studies.tables import estimate_cell


@pytest.mark.slow
def test_the_tiny_study_matches_metalab_eval_and_reports_every_curve(tmp_path, omniglot_dir):
    out = tmp_path / "study"
    cells, report = run_tiny_study("more-steps", out, omniglot_dir)
    steps = TEST_STEPS["tiny"]
    assert sorted(cells) == ["m0-maml", "m1-maml", "m2-metasgd", "m2-metasgd-rates-clipped", "m3-learned_update",
                             "m3-learned_update-corrected-as-trained", "m3-learned_update-progress-as-trained",
                             "m4-maml", "m5-metasgd",
                             "m5-metasgd-rates-clipped", "random0-omniglot", "random1-sinusoid", "random2-sinusoid"]
    # The study's episodes are `metalab eval`'s: the same seed, the same tasks, the same numbers.
    path = out / "train" / "maml-1step" / "best.pt"
    evaluated = evaluate_checkpoint(path, steps=steps, episodes=20, threads=1, data_dir=str(omniglot_dir))
    rows = cells["m0-maml"]["rows"]
    assert [r["step"] for r in rows] == list(range(steps + 1))
    for row in rows:
        assert row["mean"] == pytest.approx(evaluated["after_steps"][row["step"]]["mean"], abs=1e-9)
    assert np.mean(cells["m0-maml"]["scores"]["10"]) == pytest.approx(rows[10]["mean"])
    random = cells["random0-omniglot"]["rows"]
    assert {r["scored_on"] for r in random} == {"query", "support"}
    for cell in cells.values():  # every number at a reported step is in the report's tables
        for row in cell["rows"]:
            if row["step"] in (0, 1, 5, 10):
                assert estimate_cell(row["mean"], row["ci95"], row["metric"]) in report
    for name in ("steps-accuracy.png", "steps-mse.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG" and f"]({name})" in report


def test_clipped_rates_keep_meta_sgd_steps_descent_steps_no_larger_than_maml():
    class Model:
        config = type("Config", (), {"inner_lr": 0.4})()
        meta = {"theta": {"w": torch.ones(3)}, "learned_lr": {"w": torch.tensor([-0.2, 0.1, 3.0])}}

    fixed = clipped_rates(Model())
    assert torch.equal(fixed["learned_lr"]["w"], torch.tensor([0.0, 0.1, 0.4]))
    assert fixed["theta"] is Model.meta["theta"]
    assert torch.equal(Model.meta["learned_lr"]["w"], torch.tensor([-0.2, 0.1, 3.0]))  # the checkpoint's untouched


def test_the_learned_update_fixes_feed_it_what_meta_training_showed_it():
    """Three steps of the learned update with progress_steps=1 equal three hand-written steps at progress 0;
    without it (the default) the steps read 0, 1/3, 2/3, which differs. With corrected_steps=1, one learned
    step and then plain gradient steps."""
    from torch.func import grad

    from metalab.methods import update_rules
    from metalab.methods.learner import regression
    from metalab.methods.optimization import InnerLoop, adapt, init_meta
    from metalab.models.networks import mlp

    torch.manual_seed(0)
    learner = regression(mlp(1, 8))
    inner = InnerLoop("learned_update", inner_lr=0.05)
    meta = init_meta(learner.model, inner)
    with torch.no_grad():
        meta["update_net"]["w2"].normal_(0, 0.5)  # a trained-looking net: its progress input matters
    x, y = torch.randn(5, 1), torch.randn(5, 1)

    def by_hand(progresses):
        phi = meta["theta"]
        for progress in progresses:
            gradients = grad(lambda p: learner.loss(learner.predict(p, x), y))(phi)
            phi = {n: update_rules.learned_update(p, gradients[n], 0.05, meta["update_net"], progress)
                   for n, p in phi.items()}
        return phi

    held = adapt(meta, x, y, learner, InnerLoop("learned_update", 0.05, progress_steps=1), 3)
    default = adapt(meta, x, y, learner, inner, 3)
    for name, value in by_hand([0.0, 0.0, 0.0]).items():
        assert torch.allclose(held[name], value, atol=1e-6)
    for name, value in by_hand([0.0, 1 / 3, 2 / 3]).items():
        assert torch.allclose(default[name], value, atol=1e-6)
    assert not all(torch.allclose(held[n], default[n]) for n in held)
    # corrected_steps=1: the network's correction on the first step only, then two plain gradient steps.
    corrected = adapt(meta, x, y, learner, InnerLoop("learned_update", 0.05, corrected_steps=1), 3)
    phi = by_hand([0.0])
    for _ in range(2):
        gradients = grad(lambda p: learner.loss(learner.predict(p, x), y))(phi)
        phi = {n: p - 0.05 * gradients[n] for n, p in phi.items()}
    for name, value in phi.items():
        assert torch.allclose(corrected[name], value, atol=1e-6)
