"""Test-time support augmentation: distorted copies of each support image as extra shots of its class.

An N-way K-shot task becomes an N-way K*(1 + copies)-shot one before the method adapts: support_x
[B, N*K, 1, 28, 28] -> [B, N*K*(1 + copies), 1, 28, 28], the original images first, then copy 1 of every
image, copy 2, ...; support_y repeated in the same order. Each copy is warped by an affine map of its own,
drawn in the ranges of meta-training's --augment at `strength` (data/augment.py: rotation, shear and per-axis
scale of a new character, then the small rotation and shift of a new drawing): a one-shot learner sees its one
drawing several ways, as augmentation showed the network during training. Queries are untouched, and the
distortions are drawn from the task's own generator after the task itself, so the episodes (and their
queries) are those of the plain distribution with the same seed: scores pair episode by episode with copies=0.

kind="shift" makes copies without resampling: copy k is its image moved by whole pixels, to the 8 neighbouring
positions in turn (right, left, down, up, then the diagonals; 2 pixels for copies 9-16, ...), ink leaving the
frame lost and blank coming in. A network trained on resampled drawings (elastic distortions) reads the slight
blur of bilinearly warped copies as a difference between support and queries, which whole-pixel moves do not
add (docs/results.md).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from metalab.data.augment import random_linear_maps, warp_images
from metalab.data.episode import Episode, TaskDistribution
from metalab.errors import MetalabError

KINDS = ("affine", "shift")
NEIGHBOURS = ((0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (1, -1), (-1, 1), (-1, -1))  # (rows, columns) of a move


@dataclass(frozen=True)
class SupportCopies:
    """The copies added to each support image (--support-augment COPIES, -kind, -strength); 0 copies: none."""

    copies: int = 0
    strength: float = 1.0  # the affine copies' ranges, as a multiple of --augment's
    kind: str = "affine"

    def __post_init__(self):
        if isinstance(self.copies, bool) or not isinstance(self.copies, int) or self.copies < 0:
            raise MetalabError(f"--support-augment (distorted copies per support image) must be an integer >= 0, "
                               f"got {self.copies}")
        if not 0 < self.strength <= 2:
            raise MetalabError(f"--support-augment-strength must be in (0, 2] (1: the ranges of --augment), got "
                               f"{self.strength}")
        if self.kind not in KINDS:
            raise MetalabError(f"--support-augment-kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "shift" and self.strength != 1.0:
            raise MetalabError("--support-augment-strength scales affine copies; shift copies move by whole pixels: "
                               "drop it")

    def text(self) -> str:
        """As printed: "16 distorted copies (strength 0.5)", "8 copies moved by whole pixels"."""
        return f"{self.copies} copies moved by whole pixels" if self.kind == "shift" else \
            f"{self.copies} distorted copies (strength {self.strength:g})"


def augment_support(episode: Episode, generator: torch.Generator, support: SupportCopies) -> Episode:
    """The episode with support.copies copies of every support image appended (affine: distorted; shift: moved by
    whole pixels), labels repeated; 0 copies returns it unchanged. Only affine copies draw from the generator."""
    if support.copies == 0:
        return episode
    support_x, support_y, query_x, query_y = episode
    if support.kind == "shift":
        copied = torch.cat([_moved(support_x, *_move(copy)) for copy in range(support.copies)], dim=1)
    else:
        batch, size = support_y.shape
        repeated = support_x.repeat(1, support.copies, *[1] * (support_x.dim() - 2))  # [B, S*copies, ...]
        maps = random_linear_maps(generator, (batch, size * support.copies), support.strength)
        copied = warp_images(repeated, maps, generator, support.strength)  # copy-major, as `repeated`
    return Episode(torch.cat([support_x, copied], dim=1), support_y.repeat(1, 1 + support.copies), query_x, query_y)


def _move(copy: int) -> tuple[int, int]:
    """Copy k's move (rows, columns): the 8 neighbouring positions in turn one pixel away, then two, ..."""
    rows, columns = NEIGHBOURS[copy % len(NEIGHBOURS)]
    distance = copy // len(NEIGHBOURS) + 1
    return rows * distance, columns * distance


def _moved(x: torch.Tensor, rows: int, columns: int) -> torch.Tensor:
    """x [..., H, W] moved down by `rows` and right by `columns` pixels (negative: up, left), zeros coming in."""
    height, width = x.shape[-2:]
    padded = F.pad(x, (max(columns, 0), max(-columns, 0), max(rows, 0), max(-rows, 0)))
    top, left = max(-rows, 0), max(-columns, 0)
    return padded[..., top:top + height, left:left + width]


class SupportAugmentedTasks:
    """Tasks of `tasks`, each support set grown by augment_support."""

    def __init__(self, tasks: TaskDistribution, support: SupportCopies):
        self.tasks, self.support = tasks, support

    def sample(self, generator: torch.Generator, batch_size: int) -> Episode:
        return augment_support(self.tasks.sample(generator, batch_size), generator, self.support)
