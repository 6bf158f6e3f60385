"""What a method that adapts each task's parameters step by step is evaluated by: the query scores after every
step (the seam's `scores`), or the query predictions after the last (its `predictions`), from one per-task walk.

`trajectory(support_x, support_y, steps=S)` yields one task's parameters after 0, 1, ..., S steps (MAML's
adapt_steps, iMAML's solve_steps). The tasks of an episode are mapped by methods/batching.py, without gradients
to the meta-parameters; torch.func's transforms inside the trajectory still differentiate the inner steps.
"""

from typing import Callable, Iterator

import torch
from torch import Tensor

from metalab.data.episode import Episode
from metalab.methods.batching import map_tasks
from metalab.methods.learner import Learner, Params

Trajectory = Callable[..., Iterator[Params]]


def after_steps(output: Callable[[Params, Tensor, Tensor], Tensor], trajectory: Trajectory, episode: Episode,
                steps: int, batching: str, every_step: bool) -> Tensor:
    """[B, rows, ...]: output(phi, query_x, query_y) of each task's phi after each of 0..steps steps (rows =
    steps + 1), or after the last alone (rows = 1)."""

    def task_outputs(support_x, support_y, query_x, query_y) -> Tensor:
        return torch.stack([output(phi, query_x, query_y)
                            for step, phi in enumerate(trajectory(support_x, support_y, steps=steps))
                            if every_step or step == steps])

    with torch.no_grad():
        return map_tasks(task_outputs, batching, in_dims=(0, 0, 0, 0))(*episode)


def step_scores(learner: Learner, trajectory: Trajectory, episode: Episode, steps: int, batching: str) -> Tensor:
    """[steps + 1, B] each task's query score after 0..steps steps."""
    def score(phi, query_x, query_y):
        return learner.loss_and_score(phi, query_x, query_y)[1]

    return after_steps(score, trajectory, episode, steps, batching, every_step=True).T


def final_predictions(learner: Learner, trajectory: Trajectory, episode: Episode, steps: int,
                      batching: str) -> Tensor:
    """[B, Q, outputs] each task's query predictions after `steps` steps."""
    def predict(phi, query_x, query_y):
        return learner.predict(phi, query_x)

    return after_steps(predict, trajectory, episode, steps, batching, every_step=False)[:, 0]
