"""Mean and 95% confidence interval over episodes, and paired differences between two methods."""

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """Mean of `n` per-episode values with its 95% interval half-width 1.96 * std / sqrt(n)."""

    mean: float
    ci95: float
    n: int

    def __str__(self) -> str:
        return f"{self.mean:.4g} ± {self.ci95:.2g} (n={self.n})"

    def as_percent(self) -> str:
        return f"{100 * self.mean:.2f}% ± {100 * self.ci95:.2f}% (n={self.n})"


def mean_ci(values) -> Estimate:
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("no values to average")
    if not np.all(np.isfinite(values)):
        raise ValueError("values contain NaN or infinity")
    std = values.std(ddof=1) if values.size > 1 else float("nan")
    return Estimate(float(values.mean()), float(1.96 * std / math.sqrt(values.size)), int(values.size))


def summarize(values) -> Estimate:
    """mean_ci, except that an evaluation where some episode diverged (a non-finite loss) is reported as
    an infinite mean instead of stopping the run: a diverging inner loop is a result, not a crash."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if np.all(np.isfinite(values)):
        return mean_ci(values)
    return Estimate(float("inf"), float("nan"), int(values.size))


def paired_difference(a, b) -> Estimate:
    """Mean of a - b over the same episodes, with its interval (narrower than comparing two intervals)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values must come from the same episodes; got shapes {a.shape} and {b.shape}")
    return mean_ci(a - b)
