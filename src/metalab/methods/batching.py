"""How a method maps a per-task function over the tasks of an Episode: one helper for every method.

    "vmap"  torch.func.vmap over the task dimension: one batched computation for all tasks.
    "loop"  one task at a time; during meta-training each task's graph is freed as soon as its gradient is
            taken, so memory holds one task's graph, not the batch's.
Which is faster depends on the problem and the device (docs/performance.md); both compute the same thing, and
tests check that they agree. The MAML family maps only forward passes with vmap and differentiates with plain
autograd; iMAML differentiates inside vmap with torch.func, which needs the written-out SetBatchNorm
(docs/design.md).
"""

import functools
from typing import Callable

import torch
from torch import Tensor
from torch.func import vmap
from torch.utils._pytree import tree_flatten, tree_leaves, tree_map, tree_unflatten

from metalab.config import TASK_BATCHING
from metalab.data.episode import Episode
from metalab.methods.aot import ahead_of_time
from metalab.methods.learner import Params


def map_tasks(fn: Callable, batching: str, in_dims: tuple) -> Callable:
    """fn over the tasks of its arguments: in_dims[i] is 0 where argument i (a tensor or a tree of tensors) has
    the task dimension first, None where it is shared by every task. Outputs are stacked on a new first
    dimension, as vmap does."""
    if batching == "vmap":
        return vmap(fn, in_dims=in_dims, randomness="error")
    if batching != "loop":
        raise ValueError(f"task batching must be one of {TASK_BATCHING}, got {batching!r}")

    def looped(*args):
        tasks = next(tree_leaves(arg)[0].shape[0] for arg, dim in zip(args, in_dims, strict=True) if dim == 0)
        outputs = [fn(*(arg if dim is None else tree_map(lambda t: t[i], arg) for arg, dim in zip(args, in_dims)))
                   for i in range(tasks)]
        return tree_map(lambda *values: torch.stack(values), *outputs)

    return looped


def mean_task_loss(tasks_loss: Callable, meta: dict[str, Params], episode: Episode, chunk: int = 0,
                   compiled: str = "false") -> tuple[Tensor, Tensor]:
    """(mean query loss, mean score) over the episode's tasks, for tasks_loss(meta, tasks) -> (losses [T],
    scores [T]) of the T tasks of an Episode. The loss's gradient is the meta-gradient.

    With `chunk` tasks at a time (0: all at once) under autograd, each chunk's gradient is taken at once, freeing
    its graph, so that memory holds one chunk's graph, not the batch's; the returned loss is then a stand-in: the
    mean loss's value, with a gradient of exactly the summed per-chunk gradients. `compiled`: each chunk's loss
    and gradient run as one compiled program, compiled once per chunk shape and then reused: "true", by
    torch.compile in this process; "aot", ahead of time in a child process (methods/aot.py); "false": eager."""
    leaves = [p for p in tree_leaves(meta) if p.requires_grad]
    tasks = episode.batch_size
    if not (0 < chunk < tasks or compiled != "false") or not (leaves and torch.is_grad_enabled()):
        losses, scores = tasks_loss(meta, episode)
        return losses.mean(), scores.mean()
    chunk = chunk if 0 < chunk < tasks else tasks
    gradient_of_chunk = {"true": _compiled_chunk_gradient, "aot": _aot_chunk_gradient}.get(compiled, chunk_gradient)
    gradient_sums = [torch.zeros_like(p) for p in leaves]
    loss_sum, score_sum = 0.0, 0.0
    for start in range(0, tasks, chunk):
        gradients, loss, score = gradient_of_chunk(tasks_loss, meta, episode.tasks(start, start + chunk), tasks)
        for total, gradient in zip(gradient_sums, gradients):
            if gradient is not None:
                total += gradient
        loss_sum, score_sum = loss_sum + loss, score_sum + score
    linear = sum((p * g).sum() for p, g in zip(leaves, gradient_sums))
    return loss_sum / tasks + (linear - linear.detach()), score_sum / tasks


def chunk_gradient(tasks_loss: Callable, meta: dict[str, Params], episode: Episode, tasks: int):
    """(the gradient of the chunk's summed loss / tasks for each leaf of meta that requires grad, None where
    unused; the chunk's summed loss and score, detached)."""
    losses, scores = tasks_loss(meta, episode)
    leaves = [p for p in tree_leaves(meta) if p.requires_grad]
    gradients = torch.autograd.grad(losses.sum() / tasks, leaves, allow_unused=True)
    return gradients, losses.detach().sum(), scores.detach().sum()


def _compiled_chunk_gradient(*args):
    """chunk_gradient as one torch.compile'd program: dynamo traces through both torch.autograd.grad calls (the
    inner gradient with create_graph and this one), so the forward, the inner gradient and the meta-gradient
    become one graph that inductor fuses and plans the memory of; nothing is kept for a later backward."""
    import torch._dynamo  # imported only here: the compiler costs memory and start-up time (docs/performance.md)

    with torch._dynamo.config.patch(trace_autograd_ops=True):
        return _compiled_chunk_gradient_program()(*args)


@functools.cache
def _compiled_chunk_gradient_program() -> Callable:
    return torch.compile(chunk_gradient, dynamic=False)


def _aot_chunk_gradient(tasks_loss: Callable, meta: dict[str, Params], episode: Episode, tasks: int):
    """chunk_gradient as a program compiled ahead of time (methods/aot.py): one program per chunk shape and
    tasks_loss, over the flat list of meta's and the episode's tensors."""
    tensors, structure = tree_flatten((meta, episode))
    trained = [p.requires_grad for p in tensors]
    inputs = [t.detach().contiguous() for t in tensors]
    key = (_identity(tasks_loss), structure, tuple(trained), tuple((t.shape, t.dtype) for t in inputs), tasks)
    if key not in _PROGRAMS:
        def flat_chunk_gradient(*flat: Tensor) -> tuple[Tensor, ...]:
            flat = [t.detach().requires_grad_() if wanted else t for t, wanted in zip(flat, trained)]
            chunk_meta, chunk_episode = tree_unflatten(flat, structure)
            gradients, loss, score = chunk_gradient(tasks_loss, chunk_meta, chunk_episode, tasks)
            leaves = [p for p in tree_leaves(chunk_meta) if p.requires_grad]
            return (*(torch.zeros_like(p) if g is None else g for p, g in zip(leaves, gradients)), loss, score)

        _PROGRAMS[key] = ahead_of_time(flat_chunk_gradient, inputs)
    *gradients, loss, score = _PROGRAMS[key](inputs)
    return gradients, loss, score


_PROGRAMS: dict[tuple, Callable] = {}


def _identity(tasks_loss: Callable) -> object:
    """What makes two tasks_loss functions the same program: a partial's function and arguments (a method makes
    a new partial each step), else the function itself."""
    if isinstance(tasks_loss, functools.partial):
        return tasks_loss.func, tasks_loss.args, tuple(sorted(tasks_loss.keywords.items()))
    return tasks_loss
