"""Cubic-polynomial regression tasks, the depth experiment of Finn & Levine ("Meta-Learning and Universality",
ICLR 2018): a task is y = c3 x^3 + c2 x^2 + c1 x + c0 with every coefficient drawn uniformly from `coefficients`
and every x uniformly from `x_range` (the authors: (-1, 1) and (-3, 3), 40 shots)."""

from dataclasses import dataclass

import torch

from metalab.data.episode import Episode
from metalab.data.regression import check_batch_size, check_settings, uniform

DEGREE = 3


@dataclass(frozen=True)
class PolynomialTasks:
    """support_x/y [B, K, 1], query_x/y [B, Q, 1] (float32)."""

    shots: int = 40
    queries: int = 40
    coefficients: tuple[float, float] = (-1.0, 1.0)
    x_range: tuple[float, float] = (-3.0, 3.0)

    def __post_init__(self):
        check_settings(self, ("coefficients", "x_range"))

    def sample(self, generator: torch.Generator, batch_size: int) -> Episode:
        check_batch_size(batch_size)
        coefficients = uniform(generator, (batch_size, 1, DEGREE + 1), self.coefficients)  # c0 .. c3
        x = uniform(generator, (batch_size, self.shots + self.queries, 1), self.x_range)
        powers = x ** torch.arange(DEGREE + 1, dtype=x.dtype)  # [B, K + Q, 4]: 1, x, x^2, x^3
        y = (powers * coefficients).sum(-1, keepdim=True)
        k = self.shots
        return Episode(x[:, :k], y[:, :k], x[:, k:], y[:, k:])

