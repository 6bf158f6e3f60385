"""Membership in a run of several processes launched by torchrun, and collectives that fail loudly.

torchrun (or any launcher that sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT) starts one process per
rank; `join` connects them through torch's env:// rendezvous and makes the default process group: gloo for
the CPU, nccl for CUDA devices, unless told otherwise. Without those variables, or with one process, `join`
gives the single-process group, whose collectives are no-ops: the same command without torchrun is the
ordinary run.

Failure: every collective runs through `Group.collective`, under the process group's timeout. When one fails
(a peer died: its connections close at once; a peer hangs: the timeout passes), this process asks the
rendezvous store who is to blame: before each step every rank records there the step it enters, and a rank
whose collective failed records that too. A rank that never entered the failing step, or that entered it but
neither finished nor reported a failure, is named in the error, with the step.
"""

import os
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, Iterator

import torch
import torch.distributed as dist

from metalab.config import DIST_BACKENDS, DIST_TIMEOUT_S
from metalab.data.episode import contiguous_share
from metalab.errors import MetalabError

# Tests only: "kill@RANK:STEP" or "hang@RANK:STEP" makes that rank die (SIGKILL) or hang as it enters that
# step, on torchrun's first attempt only (so that --max-restarts recovers). Read here and nowhere else.
FAULT_VARIABLE = "METALAB_TEST_FAULT"
REPORT_GRACE_S = 10.0  # how long a survivor waits for the other ranks to report the same failure


@dataclass
class Group:
    """This process's place in the run. The single-process group has size 1 and no store."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    restarts: int = 0  # torchrun's TORCHELASTIC_RESTART_COUNT: > 0 after a failed attempt
    timeout_s: float = DIST_TIMEOUT_S
    store: object = None  # the rendezvous store (a torch.distributed Store), under a "metalab/" prefix

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, logs, TensorBoard events and the progress bar."""
        return self.rank == 0

    def share(self, count: int, what: str) -> tuple[int, int]:
        """[start, stop) of this rank's contiguous share of `count` items (tasks, examples)."""
        if count < self.size:
            raise MetalabError(f"{count} {what} cannot be split over {self.size} processes; use at least "
                               f"{self.size} (e.g. --meta-batch-size) or fewer processes (--nproc-per-node)")
        return contiguous_share(count, self.rank, self.size)

    def place(self, device: torch.device) -> torch.device:
        """The device of this rank: a plain "cuda" means the GPU of this rank's local index."""
        if device.type == "cuda" and device.index is None and self.size > 1:
            return torch.device("cuda", self.local_rank)
        return device

    def enter(self, step: int) -> None:
        """Record that this rank enters `step` (what the failure diagnosis reads)."""
        _inject_fault(self.rank, step)
        if self.size > 1:
            self.collective("the start", step, lambda: self.store.set(f"step/{self.rank}", str(step)))

    def collective(self, what: str, step: int, operation: Callable):
        """operation() (a collective of the whole group); on failure a MetalabError naming the rank to blame."""
        try:
            return operation()
        except (RuntimeError, ConnectionError, TimeoutError) as error:  # torch's DistError types are RuntimeErrors
            if self.size == 1:
                raise
            raise MetalabError(self._blame(what, step, error)) from error

    def barrier(self, step: int, what: str = "the barrier after a checkpoint") -> None:
        if self.size > 1:
            self.collective(what, step, dist.barrier)

    def _blame(self, what: str, step: int, error: Exception) -> str:
        others = [r for r in range(self.size) if r != self.rank]
        entered = {}
        try:
            self.store.set(f"failed/{self.rank}", str(step))
            entered = {r: int(self.store.get(f"step/{r}")) for r in others}
            culprits = [r for r in others if entered[r] < step]
            silent, deadline = list(others), time.monotonic() + min(self.timeout_s, REPORT_GRACE_S)
            while not culprits and silent and time.monotonic() < deadline:
                silent = [r for r in silent if not self.store.check([f"failed/{r}"])]
                time.sleep(0.1 if silent else 0)
            culprits = culprits or silent
        except Exception:  # the store is gone: its host died (rank 0, when torchrun's agent does not hold it)
            culprits = [0]
        detail = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        if not culprits:
            return (f"{what} of step {step} failed on every rank ({detail}); the last checkpoint is intact: run "
                    "again with --resume")
        names = ", ".join(f"rank {r}" + (f" (last entered step {entered[r]})" if r in entered else "")
                          for r in culprits)
        return (f"{names} stopped responding at step {step} ({what}): it died or hangs, so rank {self.rank} stops "
                f"too ({detail}). The last checkpoint is intact: run again with --resume (under torchrun "
                "--max-restarts K, restarts resume by themselves)")


def choose_backend(backend: str, device: str) -> str:
    """gloo for the CPU, nccl for CUDA devices, unless `backend` names one."""
    _check_name(backend)
    cuda = device.startswith("cuda")
    chosen = backend if backend != "auto" else ("nccl" if cuda else "gloo")
    if chosen == "nccl" and not cuda:
        raise MetalabError("--dist-backend nccl needs a CUDA device (--device cuda); use gloo on the CPU")
    if chosen == "nccl" and not dist.is_nccl_available():
        raise MetalabError("this torch has no NCCL; use --dist-backend gloo")
    return chosen


@contextmanager
def join(backend: str = "auto", timeout_s: float = DIST_TIMEOUT_S, device: str = "cpu") -> Iterator[Group]:
    """The group of this process, from torchrun's environment variables; the single-process group without
    them. The process group lives as long as the context."""
    if not timeout_s > 0:
        raise MetalabError(f"--dist-timeout must be a positive number of seconds, got {timeout_s}")
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        _check_name(backend)  # a misspelt flag is an error with one process too
        yield Group(restarts=restarts, timeout_s=timeout_s)
        return
    chosen = choose_backend(backend, device)
    timeout = timedelta(seconds=timeout_s)
    try:
        store, rank, size = next(dist.rendezvous("env://", timeout=timeout))
    except (ValueError, RuntimeError) as error:
        raise MetalabError(f"could not join the other processes ({str(error).strip().splitlines()[0]}); launch "
                           "with torchrun, or set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT") from error
    # torchrun's agent keeps one store across restarts: keys of an earlier attempt (a dead rank's address) must
    # not be read as this attempt's, so each attempt has its own prefix.
    attempt = f"attempt{restarts}/"
    group = Group(rank, size, int(os.environ.get("LOCAL_RANK", rank)), restarts, timeout_s,
                  dist.PrefixStore("metalab/" + attempt, store))
    group.store.set(f"step/{rank}", "0")  # before the process group exists, so every rank's key is there
    if torch.device(device).type == "cuda":
        torch.cuda.set_device(group.place(torch.device(device)))
    group.collective("joining", 0, lambda: dist.init_process_group(
        chosen, store=dist.PrefixStore("pg/" + attempt, store), rank=rank, world_size=size, timeout=timeout))
    finished = False
    try:
        yield group
        finished = True
    finally:
        if finished:  # after a failure the survivors leave at once: tearing down could wait on the dead
            dist.destroy_process_group()


def _check_name(backend: str) -> None:
    if backend not in DIST_BACKENDS:
        raise MetalabError(f"--dist-backend must be one of {DIST_BACKENDS}, got {backend!r}")


def _inject_fault(rank: int, step: int) -> None:
    spec = os.environ.get(FAULT_VARIABLE)
    if not spec or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
        return
    action, where = spec.split("@")
    if tuple(map(int, where.split(":"))) != (rank, step):
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    while action == "hang":
        time.sleep(60)
