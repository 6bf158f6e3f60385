"""Test-time support augmentation: distorted copies of each support image as extra shots of its class.

An N-way K-shot task becomes an N-way K*(1 + copies)-shot one before the method adapts: support_x
[B, N*K, 1, 28, 28] -> [B, N*K*(1 + copies), 1, 28, 28], the original images first, then copy 1 of every
image, copy 2, ...; support_y repeated in the same order. Each copy is warped by an affine map of its own,
drawn in the ranges of meta-training's --augment at `strength` (data/augment.py: rotation, shear and per-axis
scale of a new character, then the small rotation and shift of a new drawing): a one-shot learner sees its one
drawing several ways, as augmentation showed the network during training. Queries are untouched, and the
distortions are drawn from the task's own generator after the task itself, so the episodes (and their
queries) are those of the plain distribution with the same seed: scores pair episode by episode with copies=0.
"""

import torch

from metalab.data.augment import random_linear_maps, warp_images
from metalab.data.episode import Episode, TaskDistribution
from metalab.errors import MetalabError


def check_support_augment(copies: int, strength: float) -> None:
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 0:
        raise MetalabError(f"--support-augment (distorted copies per support image) must be an integer >= 0, "
                           f"got {copies}")
    if not 0 < strength <= 2:
        raise MetalabError(f"--support-augment-strength must be in (0, 2] (1: the ranges of --augment), got {strength}")


def augment_support(episode: Episode, generator: torch.Generator, copies: int, strength: float = 1.0) -> Episode:
    """The episode with `copies` distorted copies of every support image appended, labels repeated; copies=0
    returns it unchanged (and draws nothing)."""
    check_support_augment(copies, strength)
    if copies == 0:
        return episode
    support_x, support_y, query_x, query_y = episode
    batch, size = support_y.shape
    repeated = support_x.repeat(1, copies, *[1] * (support_x.dim() - 2))  # [B, S*copies, ...], copy-major
    warped = warp_images(repeated, random_linear_maps(generator, (batch, size * copies), strength), generator,
                         strength)
    return Episode(torch.cat([support_x, warped], dim=1), support_y.repeat(1, 1 + copies), query_x, query_y)


class SupportAugmentedTasks:
    """Tasks of `tasks`, each support set grown by augment_support."""

    def __init__(self, tasks: TaskDistribution, copies: int, strength: float = 1.0):
        check_support_augment(copies, strength)
        self.tasks, self.copies, self.strength = tasks, copies, strength

    def sample(self, generator: torch.Generator, batch_size: int) -> Episode:
        return augment_support(self.tasks.sample(generator, batch_size), generator, self.copies, self.strength)
