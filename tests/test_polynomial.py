"""Cubic-polynomial regression tasks (the depth study's): coefficients and x within their ranges, one cubic per
task shared by its support and query sets, determinism, errors; and Config's problem="polynomial" and sinusoid
ranges reaching the tasks build_problem makes."""

import math

import numpy as np
import pytest
import torch

from metalab.config import PRESETS, Config
from metalab.data.episode import generator_for
from metalab.data.polynomial import PolynomialTasks
from metalab.data.sinusoid import SinusoidTasks
from metalab.errors import MetalabError
from metalab.problem import build_problem


def fit_cubic(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Coefficients c0..c3 of the cubic through (x, y), by least squares in float64."""
    return np.linalg.lstsq(np.vander(x, 4, increasing=True), y, rcond=None)[0]


@pytest.mark.parametrize("ranges", [{}, {"coefficients": (0.5, 2.0), "x_range": (-1.0, 4.0)}])
def test_one_cubic_per_task_with_coefficients_and_x_in_their_ranges(ranges):
    tasks = PolynomialTasks(shots=40, queries=30, **ranges)
    sx, sy, qx, qy = (t.double().numpy()[..., 0] for t in tasks.sample(generator_for(3, 1), 64))
    assert sx.shape == (64, 40) and qy.shape == (64, 30)
    (c_low, c_high), (x_low, x_high) = tasks.coefficients, tasks.x_range
    assert x_low <= min(sx.min(), qx.min()) and max(sx.max(), qx.max()) <= x_high
    assert np.ptp(sx) > 0.9 * (x_high - x_low)
    coefficients = np.stack([fit_cubic(sx[t], sy[t]) for t in range(64)])  # from the support set alone
    assert np.all(coefficients > c_low - 1e-3) and np.all(coefficients < c_high + 1e-3)
    assert np.all(np.ptp(coefficients, axis=0) > 0.7 * (c_high - c_low))  # every coefficient spread over its range
    for t in range(64):  # ... and the same cubic gives the query set
        assert np.abs(np.vander(qx[t], 4, increasing=True) @ coefficients[t] - qy[t]).max() < 1e-3


def test_the_authors_setting_is_the_default():
    tasks = PolynomialTasks()
    assert (tasks.shots, tasks.coefficients, tasks.x_range) == (40, (-1.0, 1.0), (-3.0, 3.0))


def test_constant_ranges_give_a_known_cubic():
    sx, sy, _, _ = PolynomialTasks(shots=3, queries=1, coefficients=(0.5, 0.5), x_range=(2.0, 2.0)).sample(
        generator_for(0, 0), 2)
    assert torch.all(sx == 2.0) and torch.allclose(sy, torch.full_like(sy, 0.5 * (1 + 2 + 4 + 8)))


def test_determinism_and_errors():
    tasks = PolynomialTasks()
    a, b = tasks.sample(generator_for(4, 2), 5), tasks.sample(generator_for(4, 2), 5)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    with pytest.raises(MetalabError, match="coefficients"):
        PolynomialTasks(coefficients=(1.0, -1.0))
    with pytest.raises(MetalabError, match="positive"):
        PolynomialTasks(shots=0)
    with pytest.raises(MetalabError, match="batch size"):
        tasks.sample(generator_for(0, 0), 0)


def test_config_problem_polynomial_builds_cubic_tasks_and_an_mlp_of_its_depth():
    config = PRESETS["sinusoid-maml"].replace(problem="polynomial", shots=40, queries=7, hidden=13, hidden_layers=4)
    problem = build_problem(config, parts=("train", "val"))
    assert problem.tasks["train"] == PolynomialTasks(40, 7)
    linears = [m for m in problem.learner.model if isinstance(m, torch.nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(13, 1), (13, 13), (13, 13), (13, 13), (1, 13)]


def test_config_sinusoid_ranges_reach_the_tasks_and_are_checked():
    config = PRESETS["sinusoid-maml"].replace(amplitude_min=5.0, amplitude_max=10.0, phase_min=math.pi,
                                              phase_max=2 * math.pi)
    assert build_problem(config).tasks["test"] == SinusoidTasks(10, 10, (5.0, 10.0), (math.pi, 2 * math.pi))
    assert build_problem(PRESETS["sinusoid-maml"]).tasks["train"] == SinusoidTasks(10, 10)  # the defaults: the paper's
    with pytest.raises(MetalabError, match="--amplitude-min must not exceed --amplitude-max"):
        Config(problem="sinusoid", amplitude_min=6.0)
    with pytest.raises(MetalabError, match="--phase-min"):
        Config(problem="sinusoid", phase_min=4.0)
