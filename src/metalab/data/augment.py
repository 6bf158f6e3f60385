"""Random affine distortions of meta-training tasks: more distinct classes than the split holds.

With 116 meta-training characters (the minimal split), a learner soon knows the training alphabets'
style and meets unseen alphabets with an embedding fitted to them. Two distortions, both drawn from the
task generator so that (seed, step) still fixes every episode:

- per class (a new character): one random rotation, shear and anisotropic scale shared by all the
  drawings of a class in a task, like the 90-degree rotations that already serve as extra classes;
- per image (a new drawing): a small rotation and translation of each example on its own.

`strength` scales both ranges (1.0: classes up to +-15 degrees, shear 0.3, scale x0.8..1.25 per axis;
images up to +-5 degrees and +-2 pixels at 28x28); 0 turns the affine distortions off.

`elastic` = (alpha, sigma) adds Simard et al.'s elastic distortion (data/elastic.py) after the affine ones,
a field of its own for every image (per drawing, not per class): an elastic field bends strokes as one
hand's drawings of a character differ from one another, a new drawing of the same character; new classes
are the per-class affine's and the rotations' job. Only meta-training tasks are distorted.
"""

import math

import torch
import torch.nn.functional as F

from metalab.data.elastic import check_elastic, elastic_distort
from metalab.data.episode import Episode, TaskDistribution
from metalab.errors import MetalabError

CLASS_ROTATION = math.radians(15)
CLASS_SHEAR = 0.3
CLASS_LOG_SCALE = math.log(1.25)
IMAGE_ROTATION = math.radians(5)
IMAGE_SHIFT = 2 / 14  # 2 pixels of a 28-pixel image, in affine_grid's [-1, 1] coordinates


class AugmentedTasks:
    """Classification tasks of `tasks`, each class and each image randomly distorted."""

    def __init__(self, tasks: TaskDistribution, strength: float, elastic: tuple[float, float] | None = None):
        if not (0 < strength <= 2 or (strength == 0 and elastic is not None)):
            raise MetalabError(f"augmentation strength must be in (0, 2] (or 0 beside elastic distortions), "
                               f"got {strength}")
        if elastic is not None:
            check_elastic(*elastic)
        self.tasks, self.strength, self.elastic = tasks, strength, elastic

    def __getattr__(self, name):  # ways, shots, queries, num_classes of the wrapped tasks
        if name == "tasks":  # not set yet (e.g. during copying): no recursion
            raise AttributeError(name)
        return getattr(self.tasks, name)

    def sample(self, generator: torch.Generator, batch_size: int) -> Episode:
        episode = self.tasks.sample(generator, batch_size)
        if self.strength > 0:
            episode = self._affine(episode, generator, batch_size)
        if self.elastic is not None:
            support_x, query_x = (elastic_distort(x, generator, *self.elastic) for x in (episode.support_x,
                                                                                           episode.query_x))
            episode = Episode(support_x, episode.support_y, query_x, episode.query_y)
        return episode

    def _affine(self, episode: Episode, generator: torch.Generator, batch_size: int) -> Episode:
        ways = int(max(episode.support_y.max(), episode.query_y.max())) + 1
        class_matrix = random_linear_maps(generator, (batch_size, ways), self.strength)  # [B, N, 2, 2]
        return Episode(self._distort(episode.support_x, episode.support_y, class_matrix, generator), episode.support_y,
                       self._distort(episode.query_x, episode.query_y, class_matrix, generator), episode.query_y)

    def _distort(self, x: torch.Tensor, y: torch.Tensor, class_matrix: torch.Tensor, generator) -> torch.Tensor:
        """x [B, S, C, H, W], y [B, S] -> x warped by its class's and its own transform."""
        matrix = class_matrix[torch.arange(y.shape[0]).unsqueeze(1), y]  # [B, S, 2, 2]
        return warp_images(x, matrix, generator, self.strength)


def warp_images(x: torch.Tensor, matrix: torch.Tensor, generator, strength: float) -> torch.Tensor:
    """x [B, S, C, H, W], matrix [B, S, 2, 2] -> each image warped by its matrix, then by a small rotation and
    translation of its own (a new drawing), bilinearly, zeros (no ink) outside the frame."""
    batch, size = matrix.shape[:2]
    angle = _uniform(generator, (batch, size), IMAGE_ROTATION * strength)
    matrix = _rotation(angle) @ matrix
    shift = _uniform(generator, (batch, size, 2, 1), IMAGE_SHIFT * strength)
    theta = torch.cat([matrix, shift], dim=-1).view(batch * size, 2, 3)
    flat = x.reshape(batch * size, *x.shape[2:])
    grid = F.affine_grid(theta, list(flat.shape), align_corners=False)
    return F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=False).view_as(x)


def random_linear_maps(generator, shape: tuple[int, int], strength: float) -> torch.Tensor:
    """[*shape, 2, 2], e.g. [B, N]: rotation x shear x per-axis scale, each drawn uniformly in the class ranges."""
    angle = _uniform(generator, shape, CLASS_ROTATION * strength)
    shear = _uniform(generator, shape, CLASS_SHEAR * strength)
    scale = _uniform(generator, (*shape, 2), CLASS_LOG_SCALE * strength).exp()
    shear_matrix = torch.eye(2).repeat(*shape, 1, 1)
    shear_matrix[..., 0, 1] = shear
    return _rotation(angle) @ shear_matrix @ torch.diag_embed(scale)


def _rotation(angle: torch.Tensor) -> torch.Tensor:
    cos, sin = angle.cos(), angle.sin()
    return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)


def _uniform(generator, shape, bound: float) -> torch.Tensor:
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound
