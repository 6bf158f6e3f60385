"""Elastic distortions (data/elastic.py) and their use on meta-training tasks (data/augment.py)."""

import numpy as np
import pytest
import torch
from test_augment import one_image_tasks

from metalab.config import Config
from metalab.data.augment import AugmentedTasks
from metalab.data.elastic import displacement_fields, elastic_distort, warp
from metalab.data.episode import generator_for
from metalab.errors import MetalabError
from metalab.problem import build_problem


def _drawings(count: int = 3, seed: int = 0) -> torch.Tensor:
    """float32 [count, 1, 28, 28] random ink."""
    return torch.rand(count, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def test_alpha_zero_is_exactly_the_identity():
    images = _drawings()
    assert torch.equal(elastic_distort(images, generator_for(0, 1), 0.0, 4.0), images)


def test_the_field_is_uniform_noise_smoothed_by_a_gaussian(sigma=2.5, alpha=7.0, size=20):
    fields = displacement_fields(generator_for(3, 1), 2, size, size, alpha, sigma).double().numpy()
    noise = (torch.rand(2, 2, size, size, generator=generator_for(3, 1)) * 2 - 1).double().numpy()
    # Direct 2-D convolution in float64 with zeros outside, the kernel written out from its definition.
    radius = int(4 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma**2))
    weights /= weights.sum()
    padded = np.pad(noise, ((0, 0), (0, 0), (radius, radius), (radius, radius)))
    expected = np.zeros_like(noise)
    for a, da in enumerate(offsets):
        for b, db in enumerate(offsets):
            expected += weights[a, b] * padded[:, :, radius + da: radius + da + size, radius + db: radius + db + size]
    np.testing.assert_allclose(fields, alpha * expected, rtol=0, atol=1e-5 * alpha)
    # Smooth: neighbouring displacements differ far less than neighbouring raw noise does.
    assert np.abs(np.diff(fields, axis=-1)).mean() < 0.1 * alpha * np.abs(np.diff(noise, axis=-1)).mean()


def test_warp_is_bilinear_resampling_at_the_displaced_points():
    images = _drawings(2).double()
    fields = torch.zeros(2, 2, 28, 28, dtype=torch.float64)
    fields[:, 0] = 1.0  # every pixel reads the one below it
    down = warp(images, fields)
    assert torch.equal(down[..., :-1, :], images[..., 1:, :]) and torch.all(down[..., -1, :] == 0)
    fields[:, 0], fields[:, 1] = 0.0, -0.5  # halfway to the left neighbour
    left = warp(images, fields)
    torch.testing.assert_close(left[..., 1:], (images[..., 1:] + images[..., :-1]) / 2, rtol=0, atol=1e-12)
    torch.testing.assert_close(left[..., 0], images[..., 0] / 2, rtol=0, atol=1e-12)  # half of it is paper


def test_the_seed_fixes_the_distortion_and_shapes_and_dtypes_are_kept():
    images = _drawings(6).view(2, 3, 1, 28, 28)
    first = elastic_distort(images, generator_for(5, 2), 34.0, 4.0)
    assert first.shape == images.shape and first.dtype == images.dtype
    assert torch.equal(first, elastic_distort(images, generator_for(5, 2), 34.0, 4.0))
    assert not torch.equal(first, elastic_distort(images, generator_for(5, 3), 34.0, 4.0))
    assert not torch.equal(first, images)


def test_every_drawing_gets_a_field_of_its_own_on_training_tasks_only(omniglot_dir):
    episode = AugmentedTasks(one_image_tasks(), 0.0, elastic=(34.0, 4.0)).sample(generator_for(0, 1), 2)
    plain = one_image_tasks().sample(generator_for(0, 1), 2)
    assert torch.equal(episode.support_y, plain.support_y) and torch.equal(episode.query_y, plain.query_y)
    x = episode.query_x.flatten(0, 1)  # the same bar, drawn 30 times: 30 different distortions
    assert len({tuple(image.flatten().tolist()) for image in x}) == len(x)
    problem = build_problem(Config(elastic_alpha=34.0), omniglot_dir)
    assert problem.tasks["train"].elastic == (34.0, 4.0) and problem.tasks["train"].strength == 0.0
    assert not isinstance(problem.tasks["val"], AugmentedTasks) and not isinstance(problem.tasks["test"], AugmentedTasks)


@pytest.mark.parametrize("fields", [{"elastic_alpha": -1.0}, {"elastic_sigma": 0.0}, {"elastic_alpha": float("inf")},
                                    {"problem": "sinusoid", "elastic_alpha": 1.0}])
def test_bad_settings_are_one_line_errors(fields):
    with pytest.raises(MetalabError, match="elastic") as error:
        Config(**fields)
    assert "\n" not in str(error.value)


def test_bad_settings_of_the_augmentation_itself():
    with pytest.raises(MetalabError, match="elastic-sigma"):
        AugmentedTasks(one_image_tasks(), 0.0, elastic=(1.0, -2.0))
    with pytest.raises(MetalabError, match="strength"):
        AugmentedTasks(one_image_tasks(), 0.0)
