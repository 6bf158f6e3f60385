"""The meta-gradient of a batch of tasks, for any method given as `task_loss(meta, task) -> (loss, score)`.

How tasks are batched is a measured choice, not a taste (benchmarks/bench_batching.py, second-order MAML):
- "loop": one task at a time, each task's graph freed by its own backward. Fastest on a 2-core CPU for the
  large Conv4 (64 channels, max-pooling, 15 queries, 32 tasks: vmap 1.6x slower, 19x the memory).
- "vmap": torch.func.vmap over tasks. Faster on the CPU for the Omniglot presets' small Conv4 (32 channels,
  stride 2, 5 queries, 16 tasks: 2x at 1 inner step, 2.9x at 5; at 20 ways a tie), on a GPU for both (9x;
  13-17x), and for the sinusoid MLP. It needs the written-out batch norm (models/networks.py, SetBatchNorm),
  which the problem builder gives a Conv4 whose tasks are batched this way: through torch's own batch_norm,
  vmap's second-order gradient is off by 3e-3 to 3e-2 (relative).
- "batched": the method takes the whole batch at once and returns per-task losses (black-box learners,
  whose networks have tasks in the batch dimension).
All compute the gradient of the mean query loss over tasks; tests check they agree.
"""

from typing import Callable

import torch
from torch.func import vmap

from metalab.data.tasks import Episode

BATCHING = ("loop", "vmap", "batched")


def accumulate_meta_gradient(task_loss: Callable, meta: dict, episode: Episode, batching: str = "loop",
                             scale: float = 1.0) -> tuple[float, float]:
    """Add scale * d(mean task loss)/d(meta) to the .grad of every meta tensor.
    Returns (mean loss, mean score) over the batch's tasks."""
    tasks = episode.batch_size
    if batching == "loop":
        total_loss, total_score = 0.0, 0.0
        for i in range(tasks):
            loss, task_score = task_loss(meta, tuple(t[i] for t in episode))
            (loss * (scale / tasks)).backward()
            total_loss += loss.item()
            total_score += task_score.item()
        return total_loss / tasks, total_score / tasks
    if batching == "vmap":
        losses, scores = vmap(task_loss, in_dims=(None, 0), randomness="error")(meta, tuple(episode))
    elif batching == "batched":
        losses, scores = task_loss(meta, tuple(episode))
    else:
        raise ValueError(f"unknown task batching {batching!r}; choose one of {BATCHING}")
    (losses.mean() * scale).backward()
    return losses.mean().item(), scores.mean().item()
