"""What a method that adapts each task's parameters step by step is evaluated by: the query scores after every
step (the seam's `scores`), or the query predictions after the last (its `predictions`), from one walk.

`trajectory(support_x, support_y, steps=S)` yields the tasks' parameters (every tensor [B, ...]) after 0, 1, ...,
S steps, for support sets [B, n, ...] (MAML's adapt_tasks_steps; iMAML's per-task solve_steps through
`per_task`). Nothing is differentiated with respect to the meta-parameters; a trajectory still differentiates
its own inner steps.
"""

from typing import Callable, Iterator

import torch
from torch import Tensor
from torch.utils._pytree import tree_map

from metalab.data.episode import Episode
from metalab.methods.batching import map_tasks
from metalab.methods.learner import Learner, Params

Trajectory = Callable[..., Iterator[Params]]


def per_task(trajectory: Trajectory, batching: str) -> Trajectory:
    """A trajectory over a batch of tasks from one over a single task (support_x [n, ...]), mapped by `batching`:
    every step's parameters are computed first, then yielded one step at a time."""
    def batched(support_x: Tensor, support_y: Tensor, steps: int) -> Iterator[Params]:
        def walk(x, y):  # {name: [steps + 1, ...]}
            return tree_map(lambda *values: torch.stack(values), *trajectory(x, y, steps=steps))

        walked = map_tasks(walk, batching, in_dims=(0, 0))(support_x, support_y)
        for step in range(steps + 1):
            yield {name: p[:, step] for name, p in walked.items()}

    return batched


def after_steps(output: Callable[[Params, Tensor, Tensor], Tensor], trajectory: Trajectory, episode: Episode,
                steps: int, batching: str, every_step: bool) -> Tensor:
    """[B, rows, ...]: output(phi, query_x, query_y) of each task's phi after each of 0..steps steps (rows =
    steps + 1), or after the last alone (rows = 1)."""
    task_outputs = map_tasks(output, batching, in_dims=(0, 0, 0))
    with torch.no_grad():
        rows = [task_outputs(phi, episode.query_x, episode.query_y)
                for step, phi in enumerate(trajectory(episode.support_x, episode.support_y, steps=steps))
                if every_step or step == steps]
    return torch.stack(rows, dim=1)


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
