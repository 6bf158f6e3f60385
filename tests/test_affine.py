"""The affine distortion of 105x105 drawings (data/affine.py), against where the ink should go."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from metalab.data.affine import affine_drawing
from metalab.data.classification import omniglot_tasks
from metalab.data.episode import generator_for
from metalab.data.omniglot import Preprocessing, load_omniglot
from metalab.data.splits import ARCHIVES_OF_SPLIT, load_split_data
from metalab.errors import MetalabError

SIZE, CENTRE = 105, 52.5  # pixel i covers [i, i + 1): the centre of the drawing is 52.5


def drawing(points) -> Image.Image:
    """White paper with black ink at the given (row, column) pixels."""
    pixels = np.full((SIZE, SIZE), 255, np.uint8)
    for row, column in points:
        pixels[row, column] = 0
    return Image.fromarray(pixels)


def ink_columns_by_row(image: Image.Image) -> dict[int, float]:
    """Each inked row's ink-weighted mean column, in pixel-centre coordinates."""
    ink = 255 - np.asarray(image, dtype=np.float64)
    columns = np.arange(SIZE) + 0.5
    return {row: float((ink[row] * columns).sum() / ink[row].sum()) for row in range(SIZE) if ink[row].sum() > 0}


def test_shear_zero_and_scale_one_leave_a_drawing_exactly_as_it_was():
    rng = np.random.default_rng(0)
    original = Image.fromarray(rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8))
    assert np.array_equal(np.asarray(affine_drawing(original, 0.0, 1.0)), np.asarray(original))


@pytest.mark.parametrize("shear", [math.pi / 4, -math.pi / 6, math.pi / 8])
def test_a_shear_leans_a_vertical_stroke_by_its_angle(shear):
    stroke = drawing([(row, 52) for row in range(22, 83)])  # one pixel wide, through the centre
    moved = ink_columns_by_row(affine_drawing(stroke, shear, 1.0))
    for row in range(30, 76):  # away from the stroke's ends, whose ink is interpolated with paper
        expected = CENTRE + math.tan(shear) * (row + 0.5 - CENTRE)  # below the centre: right for shear > 0
        assert moved[row] == pytest.approx(expected, abs=0.05)
    assert set(moved) == set(range(22, 83))  # rows stay where they were


def test_scale_magnifies_about_the_centre_and_crops_at_the_frame():
    dots = drawing([(52, 52 + 10), (52, 52 + 30), (52 - 20, 52)])  # 10 and 30 pixels right, 20 up
    doubled = 255 - np.asarray(affine_drawing(dots, 0.0, 2.0), dtype=np.float64)
    columns = np.arange(SIZE) + 0.5
    row = doubled[52]
    right = row[60:] * columns[60:]
    assert right.sum() / row[60:].sum() == pytest.approx(CENTRE + 20, abs=0.01)  # 10 -> 20 pixels from the centre
    assert row[90:].sum() == 0  # the dot 30 pixels out went to 60, past the frame's edge at 52.5: cropped
    upper = doubled[:, 52]
    assert (upper[:40] * (np.arange(40) + 0.5)).sum() / upper[:40].sum() == pytest.approx(CENTRE - 40, abs=0.01)
    halved = 255 - np.asarray(affine_drawing(dots, 0.0, 0.5), dtype=np.float64)
    assert halved[52, 53:].dot(columns[53:]) / halved[52, 53:].sum() == pytest.approx(CENTRE + 10, abs=0.3)


def test_bad_distortions_are_refused():
    for shear, scale in ((math.pi / 2, 1.0), (0.0, 0.0), (float("nan"), 1.0)):
        with pytest.raises(MetalabError):
            Preprocessing(shear=shear, scale=scale)


def test_the_undistorted_setting_is_the_plain_data_and_distortions_keep_every_task(omniglot_dir):
    """Shear 0 / scale 1 decodes to exactly the usual arrays; a distortion holds the same characters and
    drawers in the same order, so episode i is the same task (labels, characters) at every distortion."""
    plain = load_omniglot(ARCHIVES_OF_SPLIT["minimal"], omniglot_dir)
    identity = load_omniglot(ARCHIVES_OF_SPLIT["minimal"], omniglot_dir,
                             settings=Preprocessing(shear=0.0, scale=1.0))
    assert np.array_equal(plain.images, identity.images)
    sheared, split = load_split_data("minimal", omniglot_dir, settings=Preprocessing(shear=math.pi / 4))
    _, plain_split = load_split_data("minimal", omniglot_dir)
    assert sheared.characters == plain.characters and np.array_equal(sheared.drawer, plain.drawer)
    assert np.array_equal(split.test, plain_split.test)
    assert not np.array_equal(sheared.images, plain.images)
    tasks = [omniglot_tasks(data, part, "test", 5, 1, 15, rotations=(0,))
             for data, part in ((plain, plain_split), (sheared, split))]
    episodes = [t.sample(generator_for(0, 1, 7), 1) for t in tasks]
    assert torch.equal(episodes[0].support_y, episodes[1].support_y)
    assert torch.equal(episodes[0].query_y, episodes[1].query_y)
    assert not torch.equal(episodes[0].support_x, episodes[1].support_x)
