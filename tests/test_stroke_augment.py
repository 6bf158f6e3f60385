"""Stroke-level augmentation (data/stroke_augment.py): new drawers of a character."""

import numpy as np
import pytest

from metalab.data.stroke_augment import StrokeAugment, augment_strokes
from metalab.errors import MetalabError


def _strokes(count: int = 3, points: int = 400, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    return tuple(np.column_stack([rng.uniform(10, 90, (points, 2)), np.arange(points) * 10.0]) for _ in range(count))


def test_no_change_but_the_pen_is_the_drawing_itself():
    strokes = _strokes()
    out, width = augment_strokes(strokes, np.random.default_rng(0), StrokeAugment(pen_width=(5.0, 5.0)))
    assert width == 5.0 and len(out) == 3
    assert all(np.array_equal(a, b) for a, b in zip(out, strokes))


def test_jitter_moves_each_sample_by_its_standard_deviation_and_smoothly():
    strokes = _strokes(count=1, points=20000)
    (out,), _ = augment_strokes(strokes, np.random.default_rng(1), StrokeAugment(jitter=1.5, jitter_span=5))
    moved = out[:, :2] - strokes[0][:, :2]
    assert abs(moved.std() - 1.5) < 0.05
    # neighbouring samples share 4 of their 5 normals: correlation 4/5
    assert abs(np.corrcoef(moved[:-1, 0], moved[1:, 0])[0, 1] - 0.8) < 0.03
    np.testing.assert_array_equal(out[:, 2], strokes[0][:, 2])  # times untouched


def test_per_stroke_affine_turns_each_stroke_about_its_own_centroid():
    strokes = _strokes(count=4, points=50)
    out, _ = augment_strokes(strokes, np.random.default_rng(2), StrokeAugment(stroke_rotation=0.3))
    for before, after in zip(strokes, out):
        np.testing.assert_allclose(after[:, :2].mean(0), before[:, :2].mean(0), atol=1e-9)
        # a rotation keeps distances within the stroke
        np.testing.assert_allclose(np.linalg.norm(after[1:, :2] - after[:-1, :2], axis=1),
                                   np.linalg.norm(before[1:, :2] - before[:-1, :2], axis=1), atol=1e-9)
        assert not np.allclose(after, before)


def test_dropout_leaves_strokes_out_but_never_all_and_the_seed_fixes_everything():
    strokes = _strokes(count=10, points=5)
    settings = StrokeAugment(dropout=0.5, jitter=1.0, stroke_shift=2.0)
    counts = [len(augment_strokes(strokes, np.random.default_rng(s), settings)[0]) for s in range(200)]
    assert 1 <= min(counts) and abs(np.mean(counts) - 5) < 0.5
    assert len(augment_strokes(strokes, np.random.default_rng(0), StrokeAugment(dropout=0.999))[0]) >= 1
    first, again = (augment_strokes(strokes, np.random.default_rng(9), settings) for _ in range(2))
    assert first[1] == again[1] and all(np.array_equal(a, b) for a, b in zip(first[0], again[0]))


@pytest.mark.parametrize("fields", [{"pen_width": (0.0, 2.0)}, {"pen_width": (3.0, 2.0)}, {"dropout": 1.0},
                                    {"jitter": -1.0}, {"jitter_span": 0}])
def test_bad_settings_are_errors(fields):
    with pytest.raises(MetalabError):
        StrokeAugment(**fields)
