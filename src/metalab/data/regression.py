"""What the regression task distributions (sinusoids, polynomials) share: uniform draws from a generator alone,
and the checks of their settings."""

import torch

from metalab.errors import MetalabError


def uniform(generator: torch.Generator, shape: tuple, bounds: tuple[float, float]) -> torch.Tensor:
    """float32 values drawn uniformly from [low, high) with `generator` alone."""
    low, high = bounds
    return torch.rand(shape, generator=generator) * (high - low) + low


def check_settings(tasks, ranges: tuple[str, ...]) -> None:
    """Positive shots and queries; each named field a (low, high) range with low <= high."""
    if tasks.shots <= 0 or tasks.queries <= 0:
        raise MetalabError(f"shots and queries must be positive, got {tasks.shots} and {tasks.queries}")
    for name in ranges:
        low, high = getattr(tasks, name)
        if not low <= high:
            raise MetalabError(f"{name} range must be (low, high) with low <= high, got {(low, high)}")


def check_batch_size(batch_size: int) -> None:
    if batch_size <= 0:
        raise MetalabError(f"batch size must be positive, got {batch_size}")
