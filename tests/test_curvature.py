"""The step-curvature diagnostic against dense Hessians, and as a predictor of divergence on quadratics."""

import numpy as np
import pytest
import torch
from torch.func import functional_call

from metalab.data.episode import Episode
from metalab.evaluation.curvature import episode_curvatures, step_curvature, summarize_curvatures
from metalab.evaluation.report import diverged, report
from metalab.methods.learner import MSE, regression
from metalab.methods.optimization import InnerLoop, adapt_steps
from metalab.models.networks import mlp


def dense_hessian(model, params, x, y):
    names = list(params)
    shapes = [params[n].shape for n in names]
    flat = torch.cat([params[n].reshape(-1) for n in names])

    def loss(vector):
        parts, start = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            parts[name] = vector[start:start + shape.numel()].view(shape)
            start += shape.numel()
        return torch.nn.functional.mse_loss(functional_call(model, parts, (x,)), y)

    return torch.autograd.functional.hessian(loss, flat)


def test_step_curvature_is_the_top_eigenvalue_of_the_scaled_hessian():
    torch.manual_seed(0)
    model = mlp(1, 6).double()
    theta = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = torch.linspace(-3, 3, 7, dtype=torch.float64).unsqueeze(1)
    y = torch.sin(x) * 2
    hessian = dense_hessian(model, theta, x, y)
    alpha = 0.01
    expected = alpha * torch.linalg.eigvalsh(hessian).max().item()
    got = step_curvature(regression(model), theta, alpha, x, y, torch.Generator().manual_seed(1))
    assert got == pytest.approx(expected, rel=1e-3)
    # Per-element rates (Meta-SGD): the top eigenvalue of P^1/2 H P^1/2.
    rates = {n: torch.rand(p.shape, dtype=torch.float64) * 0.02 for n, p in theta.items()}
    root = torch.cat([rates[n].reshape(-1) for n in theta]).sqrt()
    expected = torch.linalg.eigvalsh(root[:, None] * hessian * root[None, :]).max().item()
    assert step_curvature(regression(model), theta, rates, x, y) == pytest.approx(expected, rel=1e-3)


def test_above_two_diverges_and_below_two_converges_on_a_quadratic():
    """A linear model under MSE has a constant Hessian: gradient descent grows without bound exactly when
    alpha * lambda_max > 2. Two tasks, one on each side, each checked over 60 inner steps."""
    model = torch.nn.Sequential(torch.nn.Linear(1, 1)).double()
    learner = regression(model)
    theta = {"0.weight": torch.tensor([[0.5]], dtype=torch.float64), "0.bias": torch.tensor([0.0], dtype=torch.float64)}
    wide = torch.tensor([[-4.0], [4.0], [3.0], [-3.0]], dtype=torch.float64)  # large x: sharp curvature
    narrow = wide / 8
    support_x = torch.stack([wide, narrow])
    support_y = 2 * support_x + 1
    episode = Episode(support_x, support_y, support_x, support_y)
    alpha = 0.15
    inner = InnerLoop("maml", alpha)
    curvatures = episode_curvatures({"theta": theta}, learner, inner, episode)
    torch.testing.assert_close(curvatures[0], curvatures[1])  # a quadratic's Hessian is the same everywhere
    curvatures = curvatures[0]
    assert curvatures[0] > 2 > curvatures[1]
    scores = np.array([[learner.loss_and_score(phi, x, y)[1].item()
                        for phi in adapt_steps({"theta": theta}, x, y, learner, inner, 60)]
                       for x, y in zip(support_x, support_y, strict=True)]).T  # [steps + 1, tasks]
    assert list(diverged(scores, 60, MSE)) == [True, False]
    summary = summarize_curvatures(curvatures, diverged(scores, 60, MSE))
    assert (summary["above_2_and_diverged"], summary["at_most_2_but_diverged"]) == (1, 0)


def test_report_gives_the_median_and_counts_diverged_episodes(capsys):
    scores = np.array([[1.0, 1.0, 1.0, 1.0], [0.5, 0.4, 20.0, 0.3]])
    results = report(scores, [0, 1], MSE, "inner steps")
    assert results[1]["diverged"] == 1 and results[1]["median"] == 0.45
    printed = capsys.readouterr().out
    assert "after  1 inner steps: MSE" in printed and "DIVERGED in 1 of 4 episodes" in printed


def test_eval_curvature_through_the_command(tmp_path, capsys):
    import json

    from metalab.cli.main import main

    base = ["--steps", "4", "--val-every", "2", "--val-episodes", "3", "--meta-batch-size", "2", "--threads", "1"]
    assert main(["train", "--preset", "sinusoid-maml", *base, "--out-dir", str(tmp_path / "maml")]) == 0
    assert main(["eval", str(tmp_path / "maml" / "best.pt"), "--episodes", "6", "--steps", "2", "--curvature",
                 "--threads", "1", "--json", str(tmp_path / "r.json")]) == 0
    assert "alpha * lambda_max theta: median" in capsys.readouterr().out
    results = json.loads((tmp_path / "r.json").read_text())["curvature"]
    assert len(results["theta"]["per_episode"]) == len(results["after_one_step"]["per_episode"]) == 6
    assert main(["train", "--preset", "sinusoid-average", *base, "--out-dir", str(tmp_path / "avg")]) == 0
    assert main(["eval", str(tmp_path / "avg" / "best.pt"), "--episodes", "2", "--curvature", "--threads", "1"]) == 2
    assert "--curvature measures the inner loop of a gradient method" in capsys.readouterr().err
