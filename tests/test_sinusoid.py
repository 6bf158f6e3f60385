"""Sinusoid regression tasks: shapes, ranges (also out-of-distribution ones), one sinusoid per task
shared by its support and query sets, determinism and errors."""

import math

import numpy as np
import pytest
import torch

from metalab.data.episode import fixed_episodes, generator_for
from metalab.data.sinusoid import SinusoidTasks
from metalab.errors import MetalabError


def fit_sinusoid(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(amplitude, phase in [0, 2 pi)) of y = A sin(x - phase) = A cos(phase) sin x - A sin(phase) cos x."""
    design = np.stack([np.sin(x), np.cos(x)], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, y, rcond=None)
    return math.hypot(a, b), math.atan2(-b, a) % (2 * math.pi)


def predict(amplitude: float, phase: float, x: np.ndarray) -> np.ndarray:
    return amplitude * np.sin(x - phase)


@pytest.mark.parametrize("shots,queries,batch", [(10, 10, 25), (5, 20, 3), (1, 1, 1), (2, 50, 8)])
def test_shapes_and_dtypes(shots, queries, batch):
    episode = SinusoidTasks(shots=shots, queries=queries).sample(generator_for(0, 0), batch)
    sx, sy, qx, qy = episode
    assert sx.shape == sy.shape == (batch, shots, 1) and qx.shape == qy.shape == (batch, queries, 1)
    assert all(t.dtype == torch.float32 for t in episode)
    assert episode.batch_size == batch


@pytest.mark.parametrize("ranges", [
    {},  # the MAML paper's: amplitude [0.1, 5], phase [0, pi], x in [-5, 5]
    {"amplitude": (5.0, 10.0), "phase": (math.pi, 1.5 * math.pi), "x_range": (5.0, 10.0)},  # out of distribution
    {"amplitude": (0.5, 0.6), "phase": (0.2, 0.3), "x_range": (-12.0, -11.0)},
])
def test_one_sinusoid_per_task_within_the_ranges(ranges):
    tasks = SinusoidTasks(shots=10, queries=15, **ranges)
    sx, sy, qx, qy = (t.double().numpy()[..., 0] for t in tasks.sample(generator_for(1, 2), 64))
    a_low, a_high = tasks.amplitude
    p_low, p_high = tasks.phase
    x_low, x_high = tasks.x_range
    assert x_low <= sx.min() and sx.max() <= x_high and x_low <= qx.min() and qx.max() <= x_high
    amplitudes, phases = [], []
    for t in range(64):
        amplitude, phase = fit_sinusoid(sx[t], sy[t])  # from the support set alone ...
        assert a_low - 1e-4 <= amplitude <= a_high + 1e-4
        assert p_low - 1e-4 <= phase <= p_high + 1e-4
        # ... it explains the support set and predicts the query set (same amplitude and phase)
        tolerance = 1e-5 * max(1.0, a_high) * max(1.0, abs(x_low), abs(x_high))
        assert np.abs(predict(amplitude, phase, sx[t]) - sy[t]).max() < tolerance
        assert np.abs(predict(amplitude, phase, qx[t]) - qy[t]).max() < tolerance
        amplitudes.append(amplitude)
        phases.append(phase)
    # the ranges are actually spread over, not collapsed to a point
    assert np.ptp(amplitudes) > 0.5 * (a_high - a_low) and np.ptp(phases) > 0.5 * (p_high - p_low)
    assert np.ptp(sx) > 0.8 * (x_high - x_low)


def test_support_and_query_points_are_drawn_independently():
    sx, _, qx, _ = SinusoidTasks(shots=10, queries=10).sample(generator_for(0, 1), 4)
    assert not torch.equal(sx, qx)
    assert len(torch.unique(torch.cat([sx, qx], dim=1))) == 80


def test_point_ranges_collapse_to_constants():
    tasks = SinusoidTasks(shots=3, queries=2, amplitude=(2.0, 2.0), phase=(0.5, 0.5), x_range=(1.0, 1.0))
    sx, sy, qx, qy = tasks.sample(generator_for(0, 0), 2)
    assert torch.all(sx == 1.0) and torch.all(qx == 1.0)
    assert torch.allclose(sy, torch.full_like(sy, 2.0 * math.sin(0.5)))
    assert torch.allclose(qy, torch.full_like(qy, 2.0 * math.sin(0.5)))


def test_determinism():
    tasks = SinusoidTasks()
    a = tasks.sample(generator_for(4, 2), 10)
    b = tasks.sample(generator_for(4, 2), 10)
    c = tasks.sample(generator_for(4, 3), 10)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a.support_x, c.support_x)
    # fixed evaluation sets do not depend on their batch size either
    one = [e for e in fixed_episodes(tasks, seed=9, count=6, batch_size=6)][0]
    pieces = list(fixed_episodes(tasks, seed=9, count=6, batch_size=4))
    assert all(torch.equal(x, torch.cat([p[i] for p in pieces])) for i, x in enumerate(one))


@pytest.mark.parametrize("field,value", [
    ("amplitude", (5.0, 0.1)), ("phase", (3.0, 0.0)), ("x_range", (5.0, -5.0)), ("x_range", (float("nan"), 1.0)),
])
def test_bad_ranges_are_errors(field, value):
    with pytest.raises(MetalabError, match=field):
        SinusoidTasks(**{field: value})


@pytest.mark.parametrize("shots,queries", [(0, 10), (10, 0), (-1, 5)])
def test_non_positive_sizes_are_errors(shots, queries):
    with pytest.raises(MetalabError, match="positive"):
        SinusoidTasks(shots=shots, queries=queries)


def test_non_positive_batch_is_an_error():
    with pytest.raises(MetalabError, match="batch size"):
        SinusoidTasks().sample(generator_for(0, 0), 0)
