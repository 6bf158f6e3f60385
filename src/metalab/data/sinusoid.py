"""Sinusoid regression tasks, the toy problem of the MAML paper (Finn et al. 2017, section 5.1).

A task is y = amplitude * sin(x - phase); each range is configurable so that out-of-distribution tasks
(wider amplitudes, x beyond the training interval) can be drawn for extrapolation studies.
"""

import math
from dataclasses import dataclass

import torch

from metalab.data.episode import Episode
from metalab.errors import MetalabError


@dataclass(frozen=True)
class SinusoidTasks:
    """support_x/y [B, K, 1], query_x/y [B, Q, 1] (float32)."""

    shots: int = 10
    queries: int = 10
    amplitude: tuple[float, float] = (0.1, 5.0)
    phase: tuple[float, float] = (0.0, math.pi)
    x_range: tuple[float, float] = (-5.0, 5.0)

    def __post_init__(self):
        if self.shots <= 0 or self.queries <= 0:
            raise MetalabError(f"shots and queries must be positive, got {self.shots} and {self.queries}")
        for name in ("amplitude", "phase", "x_range"):
            low, high = getattr(self, name)
            if not low <= high:
                raise MetalabError(f"{name} range must be (low, high) with low <= high, got {(low, high)}")

    def sample(self, generator: torch.Generator, batch_size: int) -> Episode:
        if batch_size <= 0:
            raise MetalabError(f"batch size must be positive, got {batch_size}")
        amplitude = _uniform(generator, (batch_size, 1, 1), self.amplitude)
        phase = _uniform(generator, (batch_size, 1, 1), self.phase)
        x = _uniform(generator, (batch_size, self.shots + self.queries, 1), self.x_range)
        y = amplitude * torch.sin(x - phase)
        k = self.shots
        return Episode(x[:, :k], y[:, :k], x[:, k:], y[:, k:])


def _uniform(generator, shape, bounds):
    low, high = bounds
    return torch.rand(shape, generator=generator) * (high - low) + low
