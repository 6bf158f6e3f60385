"""Held-out evaluation: per-episode scores (accuracy, MSE, ...) before adaptation and after each step."""

import itertools
from typing import Iterable

import numpy as np

from metalab.data.episode import Episode
from metalab.distributed.group import Group
from metalab.distributed.sync import gather_columns
from metalab.evaluation.stats import Estimate, summarize
from metalab.methods.method import MetaParams, Method


def per_episode_scores(meta: MetaParams, method: Method, episodes: Iterable[Episode], max_steps: int) -> np.ndarray:
    """[rows, episodes] float64: each episode's score after 0..max_steps adaptation steps (rows = max_steps + 1),
    or in a single row for a method without steps (black-box learners). Episodes move to meta's device."""
    device = next(iter(meta["theta"].values())).device
    batches = [method.scores(meta, batch.to(device), max_steps).cpu() for batch in episodes]
    return np.concatenate([b.double().numpy() for b in batches], axis=1)


def gathered_scores(meta: MetaParams, method: Method, share: Iterable[Episode], max_steps: int, group: Group,
                    step: int = 0) -> np.ndarray:
    """per_episode_scores of every rank's share of the episodes (fixed_episodes(..., share=(rank, size))),
    joined in episode order on every rank: the same numbers whatever the number of processes."""
    share = iter(share)
    first = next(share, None)  # a rank may hold no batch at all (more processes than batches)
    scores = None if first is None else per_episode_scores(meta, method, itertools.chain([first], share), max_steps)
    return gather_columns(group, scores, step)


def evaluate(meta: MetaParams, method: Method, episodes: Iterable[Episode], steps: list[int],
             group: Group = Group(), step: int = 0) -> dict[int, Estimate]:
    """Mean and 95% interval after each number of steps in `steps` (black-box learners: [0]). With several
    processes, `episodes` is this rank's share and the estimates are of all of them."""
    scores = gathered_scores(meta, method, episodes, max(steps), group, step)
    return {s: summarize(scores[s if len(scores) > 1 else 0]) for s in steps}
