"""N-way K-shot Q-query classification tasks drawn from an in-memory image bank.

All gathering is vectorized: a batch of B tasks is a handful of tensor ops on index arrays, with no
per-image Python work and no image decoding, so sampling stays cheap beside a meta-step.
"""

import numpy as np
import torch

from metalab.data.episode import Episode
from metalab.data.omniglot import Omniglot
from metalab.data.splits import Split, make_split
from metalab.errors import MetalabError

ROTATIONS = (0, 90, 180, 270)


class ClassificationTasks:
    """Tasks over classes given as rows of `class_images` (indices into `bank`).

    bank:         uint8 [M, H, W], ink high
    class_images: int64 [C, D]: the D images of each class, each column a distinct drawer.
    class_groups: int64 [C] or None: the group (alphabet) of each class, for within-group tasks.
    within_group: probability that a task draws all its N classes from one group (Lake's within-alphabet
                  episodes, like the hard meta-test ones); otherwise the N classes are drawn from all C.
    Labels 0..N-1 are assigned to the N drawn classes in random order (a fresh permutation per task),
    and the examples of the support and query sets are shuffled.

    A within-group task picks its group uniformly among the groups holding at least N classes (each
    alphabet equally likely, as in Lake's runs, whatever its size); smaller groups host none (they still
    appear in mixed tasks). within_group=0 draws exactly the random numbers it always drew, so a seed gives
    the same tasks as before the option existed.
    """

    def __init__(self, bank: torch.Tensor, class_images: torch.Tensor, ways: int, shots: int, queries: int,
                 class_groups: torch.Tensor | None = None, within_group: float = 0.0):
        for name, value in (("ways", ways), ("shots", shots), ("queries", queries)):
            if value <= 0:
                raise MetalabError(f"{name} must be positive, got {value}")
        check_within_alphabet(within_group)
        num_classes, per_class = class_images.shape
        if ways > num_classes:
            raise MetalabError(f"{ways}-way tasks need {ways} classes but this split has only {num_classes}; "
                               "lower --ways or use a larger split")
        if shots + queries > per_class:
            raise MetalabError(f"shots + queries = {shots} + {queries} exceeds the {per_class} drawings per class "
                               "(each example comes from a distinct drawer); lower --shots or --queries")
        self.bank, self.class_images = bank, class_images
        self.ways, self.shots, self.queries = ways, shots, queries
        self.class_groups, self.within_group = class_groups, within_group
        if within_group > 0:
            self.host_groups = _host_groups(class_groups, ways)  # int64 [G]: groups with >= N classes

    @property
    def num_classes(self) -> int:
        return self.class_images.shape[0]

    def sample(self, generator: torch.Generator, batch_size: int) -> Episode:
        if batch_size <= 0:
            raise MetalabError(f"batch size must be positive, got {batch_size}")
        n, k, q = self.ways, self.shots, self.queries
        num_classes, per_class = self.class_images.shape
        # Random keys + topk = sampling without replacement, batched over tasks.
        keys = torch.rand(batch_size, num_classes, generator=generator)  # [B, C]
        if self.within_group > 0:
            keys = self._within_group_keys(keys, generator)
        classes = keys.topk(n, dim=1).indices  # [B, N]
        drawers = torch.rand(batch_size, n, per_class, generator=generator).topk(k + q, dim=2).indices
        images = self.class_images[classes.unsqueeze(-1), drawers]  # [B, N, K+Q]
        labels = torch.arange(n).view(1, n, 1).expand(batch_size, n, k + q)
        support = _shuffle(images[:, :, :k].reshape(batch_size, n * k), labels[:, :, :k].reshape(batch_size, -1), generator)
        query = _shuffle(images[:, :, k:].reshape(batch_size, n * q), labels[:, :, k:].reshape(batch_size, -1), generator)
        return Episode(self._pixels(support[0]), support[1], self._pixels(query[0]), query[1])

    def _within_group_keys(self, keys: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """keys [B, C] in [0, 1) -> the same, with -1 for the classes outside each within-group task's group,
        so that topk draws that task's N classes from its group alone."""
        batch = keys.shape[0]
        within = torch.rand(batch, generator=generator) < self.within_group  # [B]
        group = self.host_groups[torch.randint(len(self.host_groups), (batch,), generator=generator)]  # [B]
        outside = self.class_groups.unsqueeze(0) != group.unsqueeze(1)  # [B, C]
        return keys.masked_fill(outside & within.unsqueeze(1), -1.0)

    def _pixels(self, index: torch.Tensor) -> torch.Tensor:
        """[B, S] image indices -> float32 [B, S, 1, H, W] in [0, 1]."""
        # index_select is much faster than advanced indexing here (docs/performance.md); scale after the dtype cast.
        pixels = self.bank.index_select(0, index.reshape(-1)).to(torch.float32).mul_(1.0 / 255.0)
        return pixels.view(*index.shape, 1, *self.bank.shape[1:])


def check_within_alphabet(probability: float) -> None:
    if not (isinstance(probability, (int, float)) and 0 <= probability <= 1):
        raise MetalabError(f"--within-alphabet is the probability of a within-alphabet task and must be in [0, 1], "
                           f"got {probability}")


def _host_groups(class_groups: torch.Tensor | None, ways: int) -> torch.Tensor:
    """The groups of at least `ways` classes, int64 [G]; none is a MetalabError."""
    if class_groups is None:
        raise MetalabError("within-alphabet tasks need the alphabet of each class; these tasks have none")
    counts = torch.bincount(class_groups)
    hosts = torch.nonzero(counts >= ways).flatten()
    if hosts.numel() == 0:
        raise MetalabError(f"no alphabet of this part holds {ways} characters (the largest holds "
                           f"{int(counts.max())}), so no {ways}-way within-alphabet task exists; lower --ways or "
                           "set --within-alphabet 0")
    return hosts


def _shuffle(index, labels, generator):
    order = torch.rand(index.shape, generator=generator).argsort(dim=1)
    return index.gather(1, order), labels.gather(1, order)


def class_table(data: Omniglot, characters: np.ndarray, rotations=(0,), mirrors: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Bank of the drawings (rotated and mirrored copies appended) and the [C, D] table of the classes
    (character, rotation, mirrored or not) for the given character ids."""
    for r in rotations:
        if r not in ROTATIONS:
            raise MetalabError(f"rotation {r} is not one of {ROTATIONS}")
    views = [data.images, data.images[:, :, ::-1]] if mirrors else [data.images]
    bank = np.concatenate([np.rot90(view, k=r // 90, axes=(1, 2)) for view in views for r in rotations])
    per_character = np.bincount(data.character[np.isin(data.character, characters)])
    counts = set(per_character[characters].tolist())
    if len(counts) != 1:
        raise MetalabError(f"characters have unequal numbers of drawings {sorted(counts)}; the data is incomplete: "
                           "re-extract the archives (delete the cache folder)")
    # data is sorted by (character, drawer), so each character's drawings are a contiguous run.
    starts = np.searchsorted(data.character, characters)
    table = starts[:, None] + np.arange(counts.pop())[None, :]  # [chars, D]
    tables = [table + i * len(data.images) for i in range(len(bank) // len(data.images))]
    return torch.from_numpy(np.ascontiguousarray(bank)), torch.from_numpy(np.concatenate(tables))


def omniglot_tasks(data: Omniglot, split: str | Split, part: str, ways: int, shots: int, queries: int,
                   rotations=None, mirrors: bool = False, within_alphabet: float = 0.0) -> ClassificationTasks:
    """Tasks from one part of a split; rotations default to all four for train, none otherwise.

    within_alphabet: probability that a task's N classes all come from one alphabet. A rotated or mirrored
    view of an alphabet counts as an alphabet of its own (a script as it would look turned), so such a task
    never mixes upright characters with turned ones.
    """
    split = make_split(split, data) if isinstance(split, str) else split
    if rotations is None:
        rotations = ROTATIONS if part == "train" else (0,)
    characters = split.part(part)
    bank, table = class_table(data, characters, tuple(rotations), mirrors)
    names, alphabet = np.unique([data.alphabet_of(c) for c in characters], return_inverse=True)  # [chars]
    views = len(table) // max(len(characters), 1)  # the table is view-major: all characters upright, then turned
    groups = np.concatenate([alphabet.reshape(-1) + view * len(names) for view in range(views)])
    return ClassificationTasks(bank, table, ways, shots, queries, torch.from_numpy(groups.astype(np.int64)),
                               within_alphabet)


def alphabet_tasks(data: Omniglot, split: Split, part: str, alphabet: str, ways: int, shots: int,
                   queries: int) -> ClassificationTasks:
    """Tasks of one part whose N classes all come from `alphabet` (Lake's within-alphabet episodes, which tell
    apart similar characters of one script); no rotations."""
    characters = np.array([c for c in split.part(part) if data.alphabet_of(c) == alphabet], dtype=np.int64)
    if characters.size < ways:
        raise MetalabError(f"{ways}-way tasks within {alphabet} need {ways} of its characters, but the {split.name} "
                           f"split's {part} part holds {characters.size}; lower --ways or use another split")
    bank, table = class_table(data, characters)
    return ClassificationTasks(bank, table, ways, shots, queries)
