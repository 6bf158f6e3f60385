"""The task interface every method consumes: an Episode, a batch of tasks, each a support set and a query set.

A task distribution is anything with `sample(generator, batch_size) -> Episode`. Bring your own by
writing that one method (see README); the training loop and evaluation never look further.
"""

import operator
from typing import Iterator, NamedTuple, Protocol

import numpy as np
import torch

VAL_SEED = 1_000_003  # the fixed meta-validation episodes; never the seed of the test episodes (0 by default)


class Episode(NamedTuple):
    """A batch of B tasks. For N-way K-shot Q-query classification of 1x28x28 images:

    support_x [B, N*K, 1, 28, 28] float32   support_y [B, N*K] int64 in 0..N-1
    query_x   [B, N*Q, 1, 28, 28] float32   query_y   [B, N*Q] int64 in 0..N-1
    For regression, x and y are [B, K, dim] and [B, Q, dim] float32.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor

    def to(self, device) -> "Episode":
        return Episode(*(t.to(device, non_blocking=True) for t in self))

    def task(self, i: int) -> "Episode":
        """Task i alone, keeping a batch dimension of 1."""
        return Episode(*(t[i : i + 1] for t in self))

    def tasks(self, start: int, stop: int) -> "Episode":
        return Episode(*(t[start:stop] for t in self))

    @property
    def batch_size(self) -> int:
        return self.support_x.shape[0]


class TaskDistribution(Protocol):
    def sample(self, generator: torch.Generator, batch_size: int) -> Episode:
        """Draw `batch_size` tasks using only `generator` for randomness (so a seed fixes them)."""
        ...


def generator_for(seed: int, *key: int) -> torch.Generator:
    """A CPU generator determined by (seed, *key), e.g. (seed, step): identical on every machine/process.

    Distinct (seed, *key) give statistically independent streams (numpy's SeedSequence hashing). Each part
    (an integer in [0, 2**64)) enters as two 32-bit words after the number of parts: SeedSequence alone
    zero-pads short entropy and splits big integers into words, so (seed, 1) and (seed, 1, 0), or
    (2**32 + 5,) and (5, 1), would otherwise give the same stream.
    """
    parts = [operator.index(part) for part in (seed, *key)]
    words = [len(parts)]
    for part in parts:
        if not 0 <= part < 2**64:
            raise ValueError(f"seed and key parts must be integers in [0, 2**64), got {part}")
        words += [part & 0xFFFFFFFF, part >> 32]
    state = np.random.SeedSequence(words).generate_state(2, np.uint32)
    generator = torch.Generator()
    generator.manual_seed(int(state[0]) << 32 | int(state[1]))
    return generator


def concat(episodes: list[Episode]) -> Episode:
    return Episode(*(torch.cat(parts) for parts in zip(*episodes)))


def contiguous_share(count: int, part: int, parts: int) -> tuple[int, int]:
    """[start, stop) of part `part` of `parts` near-equal contiguous pieces of range(count); the first
    count % parts pieces hold one item more. Concatenated in part order, the pieces are range(count)."""
    if not 0 <= part < parts:
        raise ValueError(f"part must be in [0, {parts}), got {part}")
    size, extra = divmod(count, parts)
    start = part * size + min(part, extra)
    return start, start + size + (part < extra)


def fixed_episodes(tasks: TaskDistribution, seed: int, count: int, batch_size: int = 50,
                   share: tuple[int, int] = (0, 1)) -> Iterator[Episode]:
    """The evaluation set fixed by (task distribution, seed, count), in batches of `batch_size`.

    Episode i depends only on (seed, i): every method sees identical episodes whatever its batch size,
    and a longer set extends a shorter one. share=(rank, processes) yields only that process's contiguous
    share of the batches; the batches themselves do not depend on the number of processes, so neither do
    the scores computed on them.
    """
    if count <= 0 or batch_size <= 0:
        raise ValueError(f"episode count and batch size must be positive, got {count} and {batch_size}")
    first, last = contiguous_share(-(-count // batch_size), *share)
    for start in range(first * batch_size, min(last * batch_size, count), batch_size):
        stop = min(start + batch_size, count)
        yield concat([tasks.sample(generator_for(seed, 1, i), 1) for i in range(start, stop)])
