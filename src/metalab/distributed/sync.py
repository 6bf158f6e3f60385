"""What the training loops exchange between ranks: the mean gradient over all tasks, identical parameters,
scores gathered in episode order, and the checkpoint rank 0 reads and writes. In the single-process group
every function is the identity or a no-op, so the ordinary run computes exactly what it did before.

No DistributedDataParallel: it does not support torch.autograd.grad or double backward, and the methods'
meta-gradients come from torch.func; one explicit all-reduce of the flattened gradient replaces it.
"""

from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from metalab import checkpoint
from metalab.distributed.group import Group
from metalab.errors import MetalabError


def mean_gradients(group: Group, params: list[Tensor], loss: Tensor, score: Tensor, here: int, total: int,
                    step: int) -> tuple[float, float]:
    """Turn each parameter's .grad, of the MEAN loss over this rank's `here` tasks (or examples), into the
    gradient of the mean over all `total` of the step: weight by `here`, one flattened all-reduce (SUM), divide
    by `total`; unequal shares weigh what they hold. Returns (loss, score) averaged the same way."""
    if group.size == 1:
        return loss.item(), score.item()
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads] + [loss.detach().reshape(1).to(grads[0]),
                                                        score.detach().reshape(1).to(grads[0])])
    flat.mul_(here)
    group.collective("the meta-gradient all-reduce", step, lambda: dist.all_reduce(flat))
    flat.div_(total)
    start = 0
    for p in params:
        if p.grad is not None:  # None on every rank alike: the parameter took no part in the loss
            p.grad.copy_(flat[start:start + p.numel()].view_as(p))
        start += p.numel()
    return flat[-2].item(), flat[-1].item()


def weighted_mean(group: Group, value: float, weight: float, step: int, what: str) -> float:
    """The mean over all ranks of `value` weighted by `weight` (e.g. a score over `weight` examples)."""
    if group.size == 1:
        return value
    sums = torch.tensor([value * weight, weight], dtype=torch.float64, device=_device(group))
    group.collective(what, step, lambda: dist.all_reduce(sums))
    return (sums[0] / sums[1]).item()


def broadcast_parameters(group: Group, params: list[Tensor]) -> None:
    """Rank 0's values into every rank's `params`, checking that they were equal already: every rank
    initializes from the seed, so a difference means the machines compute differently (other versions of
    torch or numpy) and would not draw the same tasks either."""
    if group.size == 1:
        return
    with torch.no_grad():
        flat = torch.cat([p.detach().reshape(-1) for p in params])
        mine = flat.clone()
        group.collective("the broadcast of the initial parameters", 0, lambda: dist.broadcast(flat, 0))
        start = 0
        for p in params:
            p.copy_(flat[start:start + p.numel()].view_as(p))
            start += p.numel()
    differs = _gather(group, torch.tensor([float(not torch.equal(flat, mine))], device=flat.device), 0,
                      "the check of the initial parameters")
    if differs.any():
        ranks = [r for r in range(group.size) if differs[r, 0]]
        raise MetalabError(f"the initial parameters of rank(s) {ranks} differ from rank 0's, drawn from the same "
                           "seed: those machines run other versions of torch or numpy; install the same everywhere")


def check_in_sync(group: Group, params: list[Tensor], step: int) -> None:
    """Compare a cheap checksum of the parameters (per tensor: sum and sum of squares, float64) across ranks;
    they must agree to the bit, as every rank applies the same update to the same values."""
    if group.size == 1:
        return
    with torch.no_grad():
        sums = torch.stack([torch.stack([p.double().sum(), p.double().square().sum()]) for p in params]).reshape(-1)
    checksums = _gather(group, sums, step, "the parameter checksum")
    diverged = [r for r in range(group.size) if not torch.equal(checksums[r], checksums[0])]
    if diverged:
        raise MetalabError(f"at step {step} the parameters of rank(s) {diverged} differ from rank 0's: the ranks "
                           "no longer compute the same run (a nondeterministic operation, or machines with other "
                           "torch versions or devices); the last checkpoint is intact")


def gather_columns(group: Group, scores: np.ndarray | None, step: int) -> np.ndarray:
    """[rows, episodes] scores of every rank's contiguous share of episodes, joined in rank order, that is in
    episode order; `scores` is None on a rank whose share is empty."""
    if group.size == 1:
        return scores
    every = [None] * group.size
    group.collective("the gathering of scores", step, lambda: dist.all_gather_object(every, scores))
    return np.concatenate([s for s in every if s is not None], axis=1)


def load_from_main(group: Group, path: Path) -> dict | None:
    """The checkpoint at `path` as rank 0 reads it (on the CPU), the same on every rank, or None when rank 0
    has none: other machines need no copy of the run folder."""
    if group.size == 1:
        return checkpoint.load(path) if Path(path).exists() else None
    shared = [None]
    if group.is_main:
        try:
            shared[0] = ("state", checkpoint.load(path) if Path(path).exists() else None)
        except MetalabError as error:  # every rank stops with rank 0's message
            shared[0] = ("error", str(error))
    group.collective("sharing the checkpoint", 0, lambda: dist.broadcast_object_list(shared, 0))
    kind, value = shared[0]
    if kind == "error":
        raise MetalabError(value)
    return value


def save_from_main(group: Group, path: Path, make_state: Callable[[], dict], step: int) -> None:
    """Rank 0 writes the checkpoint (atomically); then every rank waits for it, so none runs ahead of a
    checkpoint that is not there yet."""
    if group.is_main:
        checkpoint.save(path, make_state())
    group.barrier(step)


def _gather(group: Group, values: Tensor, step: int, what: str) -> Tensor:
    """[size, *values.shape]: every rank's `values`."""
    every = [torch.empty_like(values) for _ in range(group.size)]
    group.collective(what, step, lambda: dist.all_gather(every, values))
    return torch.stack(every).cpu()


def _device(group: Group) -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
