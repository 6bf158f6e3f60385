"""Held-out evaluation: per-episode scores (accuracy, MSE, ...) before adaptation and after each step."""

from typing import Iterable

import numpy as np

from metalab.data.episode import Episode
from metalab.evaluation.stats import Estimate, summarize
from metalab.methods.method import MetaParams, Method


def per_episode_scores(meta: MetaParams, method: Method, episodes: Iterable[Episode], max_steps: int) -> np.ndarray:
    """[rows, episodes] float64: each episode's score after 0..max_steps adaptation steps (rows = max_steps + 1),
    or in a single row for a method without steps (black-box learners). Episodes move to meta's device."""
    device = next(iter(meta["theta"].values())).device
    batches = [method.scores(meta, batch.to(device), max_steps).cpu() for batch in episodes]
    return np.concatenate([b.double().numpy() for b in batches], axis=1)


def evaluate(meta: MetaParams, method: Method, episodes: Iterable[Episode], steps: list[int]) -> dict[int, Estimate]:
    """Mean and 95% interval after each number of steps in `steps` (black-box learners: [0])."""
    scores = per_episode_scores(meta, method, episodes, max(steps))
    return {s: summarize(scores[s if len(scores) > 1 else 0]) for s in steps}
