"""Held-out evaluation: per-episode accuracy (or MSE), before adaptation and after each inner step."""

from typing import Iterable

import numpy as np

from metalab.data.tasks import Episode
from metalab.evaluation.stats import Estimate, summarize
from metalab.methods.method import Method


def per_episode_scores(meta, method: Method, episodes: Iterable[Episode], max_steps: int) -> np.ndarray:
    """[rows, episodes]: each episode's score after 0..max_steps inner steps (rows = max_steps + 1), or in a
    single row for a method without inner steps (black-box learners)."""
    device = next(iter(meta["theta"].values())).device
    batches = [method.scores(meta, batch.to(device), max_steps).cpu() for batch in episodes]
    return np.concatenate([b.double().numpy() for b in batches], axis=1)


def evaluate(meta, method: Method, episodes, steps: list[int]) -> dict[int, Estimate]:
    """Mean and 95% interval after each number of inner steps in `steps` (black-box learners: [0])."""
    scores = per_episode_scores(meta, method, episodes, max(steps))
    return {s: summarize(scores[s]) for s in steps}
