"""Held-out evaluation: per-episode accuracy (or MSE) before adaptation and after each inner step."""

from typing import Iterable

import numpy as np
import torch

from metalab.data.tasks import Episode
from metalab.evaluation.stats import Estimate, summarize
from metalab.methods.optimization import Learner, InnerLoop, adapt_steps, score


def per_episode_scores(meta, learner: Learner, inner: InnerLoop, episodes: Iterable[Episode],
                       max_steps: int) -> np.ndarray:
    """[max_steps + 1, episodes]: score of each episode after 0..max_steps inner steps."""
    device = next(iter(meta["theta"].values())).device
    columns = []
    for batch in episodes:
        batch = batch.to(device)
        for i in range(batch.batch_size):
            support_x, support_y, query_x, query_y = (t[i] for t in batch)
            scores = []
            with torch.no_grad():
                for phi in adapt_steps(meta, support_x, support_y, learner, inner, max_steps):
                    prediction = learner.predict(phi, query_x)
                    scores.append(score(prediction, query_y, learner.loss(prediction, query_y)).item())
            columns.append(scores)
    return np.array(columns, dtype=np.float64).T


def evaluate(meta, learner, inner, episodes, steps: list[int]) -> dict[int, Estimate]:
    """Mean and 95% interval after each number of inner steps in `steps`."""
    scores = per_episode_scores(meta, learner, inner, episodes, max(steps))
    return {s: summarize(scores[s]) for s in steps}
