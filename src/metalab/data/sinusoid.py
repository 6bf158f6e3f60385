"""Sinusoid regression tasks, the toy problem of the MAML paper (Finn et al. 2017, section 5.1).

A task is y = amplitude * sin(x - phase); each range is configurable so that out-of-distribution tasks
(wider amplitudes, x beyond the training interval) can be drawn for extrapolation studies.
"""

import math
from dataclasses import dataclass

import torch

from metalab.data.episode import Episode
from metalab.data.regression import check_batch_size, check_settings, uniform


@dataclass(frozen=True)
class SinusoidTasks:
    """support_x/y [B, K, 1], query_x/y [B, Q, 1] (float32)."""

    shots: int = 10
    queries: int = 10
    amplitude: tuple[float, float] = (0.1, 5.0)
    phase: tuple[float, float] = (0.0, math.pi)
    x_range: tuple[float, float] = (-5.0, 5.0)

    def __post_init__(self):
        check_settings(self, ("amplitude", "phase", "x_range"))

    def sample(self, generator: torch.Generator, batch_size: int) -> Episode:
        check_batch_size(batch_size)
        amplitude = uniform(generator, (batch_size, 1, 1), self.amplitude)
        phase = uniform(generator, (batch_size, 1, 1), self.phase)
        x = uniform(generator, (batch_size, self.shots + self.queries, 1), self.x_range)
        y = amplitude * torch.sin(x - phase)
        k = self.shots
        return Episode(x[:, :k], y[:, :k], x[:, k:], y[:, k:])

