"""Mirrored classes and random affine distortions of meta-training tasks (data/augment.py)."""

import numpy as np
import pytest
import torch

from metalab.config import preset
from metalab.data import augment
from metalab.data.augment import AugmentedTasks
from metalab.data.classification import ROTATIONS, ClassificationTasks, class_table
from metalab.data.episode import generator_for
from metalab.errors import MetalabError
from metalab.problem import build_problem


def one_image_tasks(num_classes=6, per_class=4, ways=5, shots=1, queries=3):
    """Every drawing of every class is the same off-centre bar, so only the distortions tell images apart."""
    image = torch.zeros(28, 28, dtype=torch.uint8)
    image[6:20, 9:13] = 255
    table = torch.zeros(num_classes, per_class, dtype=torch.int64)
    return ClassificationTasks(image.unsqueeze(0), table, ways, shots, queries)


def test_labels_and_shapes_are_kept_and_the_seed_fixes_the_distortions():
    tasks = AugmentedTasks(one_image_tasks(), strength=1.0)
    episode = tasks.sample(generator_for(0, 3), 8)
    plain = one_image_tasks().sample(generator_for(0, 3), 8)
    assert [t.shape for t in episode] == [t.shape for t in plain]
    assert torch.equal(episode.support_y, plain.support_y) and torch.equal(episode.query_y, plain.query_y)
    again = tasks.sample(generator_for(0, 3), 8)
    assert all(torch.equal(a, b) for a, b in zip(episode, again, strict=True))
    other = tasks.sample(generator_for(0, 4), 8)
    assert not torch.equal(episode.query_x, other.query_x)
    assert not torch.equal(episode.query_x, plain.query_x)
    assert episode.query_x.min() >= 0 and episode.query_x.max() <= 1
    assert tasks.ways == 5 and tasks.num_classes == 6  # the wrapped distribution's sizes


def test_a_class_shares_one_transform_and_classes_differ(monkeypatch):
    """Without the per-image jitter, the drawings of a class stay identical and distinct classes do not."""
    monkeypatch.setattr(augment, "IMAGE_ROTATION", 0.0)
    monkeypatch.setattr(augment, "IMAGE_SHIFT", 0.0)
    episode = AugmentedTasks(one_image_tasks(), strength=1.0).sample(generator_for(1, 0), 4)
    x = torch.cat([episode.support_x, episode.query_x], 1)
    y = torch.cat([episode.support_y, episode.query_y], 1)
    for task in range(4):
        per_class = [x[task][y[task] == label] for label in range(5)]
        for images in per_class:
            assert len(images) == 4 and all(torch.allclose(image, images[0]) for image in images)
        for a in range(5):
            for b in range(a + 1, 5):
                assert (per_class[a][0] - per_class[b][0]).abs().max() > 0.1


def test_the_per_image_jitter_moves_drawings_of_one_class_apart(monkeypatch):
    monkeypatch.setattr(augment, "CLASS_ROTATION", 0.0)
    monkeypatch.setattr(augment, "CLASS_SHEAR", 0.0)
    monkeypatch.setattr(augment, "CLASS_LOG_SCALE", 0.0)
    episode = AugmentedTasks(one_image_tasks(), strength=1.0).sample(generator_for(2, 0), 2)
    images = episode.query_x[0][episode.query_y[0] == 0]
    assert (images[0] - images[1]).abs().max() > 0.1
    # and the distortions are small: the bar's ink stays about where it was
    original = one_image_tasks().sample(generator_for(2, 0), 2).query_x[0, 0]
    assert abs(images[0].sum() - original.sum()) / original.sum() < 0.25


def test_augmenting_sinusoids_is_an_error():
    with pytest.raises(MetalabError, match="sinusoids"):
        preset("sinusoid-maml").replace(augment=1.0)
    with pytest.raises(MetalabError, match="sinusoids"):
        preset("sinusoid-maml").replace(mirrors=True)


def test_a_copy_of_augmented_tasks_samples_the_same_episodes():
    import copy

    tasks = AugmentedTasks(one_image_tasks(), strength=1.0)
    twin = copy.deepcopy(tasks)
    assert all(torch.equal(a, b) for a, b in zip(tasks.sample(generator_for(5, 0), 2), twin.sample(generator_for(5, 0), 2), strict=True))


@pytest.mark.parametrize("strength", [0.0, -1.0, 2.5])
def test_strength_out_of_range_is_an_error(strength):
    with pytest.raises(MetalabError, match="strength"):
        AugmentedTasks(one_image_tasks(), strength)
    if strength != 0.0:
        with pytest.raises(MetalabError, match="--augment"):
            preset("omniglot-5w1s-maml").replace(augment=strength)


def test_mirrors_double_the_classes_and_are_left_right_flips(minimal):
    data, split = minimal
    bank, table = class_table(data, split.train, ROTATIONS, mirrors=True)
    assert table.shape == (8 * 116, 20)
    base = table[:116].reshape(-1).numpy()
    mirrored = bank[table[4 * 116:5 * 116].reshape(-1)].numpy()
    assert np.array_equal(mirrored, data.images[base][:, :, ::-1])
    quarter_turn_of_mirror = bank[table[5 * 116:6 * 116].reshape(-1)].numpy()
    assert np.array_equal(quarter_turn_of_mirror, np.rot90(data.images[base][:, :, ::-1], k=1, axes=(1, 2)))


def test_only_meta_training_tasks_are_mirrored_and_distorted(omniglot_dir):
    config = preset("omniglot-5w1s-maml").replace(mirrors=True, augment=1.0)
    tasks = build_problem(config, omniglot_dir).tasks
    assert isinstance(tasks["train"], AugmentedTasks) and tasks["train"].num_classes == 8 * 116
    assert type(tasks["val"]) is ClassificationTasks and tasks["val"].num_classes == 20
    assert type(tasks["test"]) is ClassificationTasks and tasks["test"].num_classes == 106
    plain = build_problem(preset("omniglot-5w1s-maml"), omniglot_dir).tasks
    assert type(plain["train"]) is ClassificationTasks and plain["train"].num_classes == 4 * 116
