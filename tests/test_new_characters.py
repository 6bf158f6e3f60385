"""New characters from strokes: halves of two characters of one meta-train alphabet (data/new_characters.py,
--stroke-characters)."""

import dataclasses

import numpy as np
import pytest
import torch
from conftest import train_tiny

from metalab.cli.main import main
from metalab.config import Config
from metalab.data import new_characters
from metalab.data.classification import ROTATIONS, omniglot_tasks
from metalab.data.new_characters import joined, recombination, with_new_characters
from metalab.data.render import small_drawing
from metalab.data.strokes import load_strokes
from metalab.errors import MetalabError
from metalab.problem import build_problem

COUNT = 6


@pytest.fixture(scope="module")
def recombined(minimal, omniglot_dir):
    data, split = minimal
    return with_new_characters(data, split, COUNT, seed=0, data_dir=omniglot_dir, download_missing=False)


def _stroke(*points) -> np.ndarray:
    return np.array([(x, y, t) for t, (x, y) in enumerate(points)], dtype=np.float64)


def test_a_vertical_cut_joins_the_left_of_one_to_the_right_of_the_other():
    # A: a horizontal bar from x=0 to 10 at y=0 (cut at x=5); B: a bar from x=20 to 40 at y=-10 (cut at x=30).
    first, second = (_stroke((0, 0), (10, 0)),), (_stroke((20, -10), (40, -10)),)
    left, right = joined(first, second, axis=0)
    np.testing.assert_allclose(left[:, :2], [(0, 0), (5, 0)])  # clipped at the cut
    np.testing.assert_allclose(right[:, :2], [(5, 0), (15, 0)])  # moved onto A's cut and centre
    assert left[-1, 2] == pytest.approx(0.5)  # the crossing's time interpolated too


def test_a_horizontal_cut_keeps_the_top_of_one_and_a_crossing_stroke_splits_into_runs():
    # A zigzag crossing the cut y=0 twice (y counted upward: the top is y >= 0).
    zigzag = _stroke((0, 10), (1, -10), (2, 10))
    top = joined((zigzag,), (_stroke((0, 0), (0, 1)),), axis=1)[:2]
    np.testing.assert_allclose(top[0][:, :2], [(0, 10), (0.5, 0)])
    np.testing.assert_allclose(top[1][:, :2], [(1.5, 0), (2, 10)])


def test_each_new_character_is_a_class_of_its_parents_alphabet(minimal, recombined):
    data, split = minimal
    new, new_split = recombined
    ids = np.arange(len(data.characters), len(data.characters) + COUNT)
    np.testing.assert_array_equal(new_split.train, np.concatenate([split.train, ids]))
    np.testing.assert_array_equal(new_split.val, split.val)
    np.testing.assert_array_equal(new_split.test, split.test)
    np.testing.assert_array_equal(new.images[:len(data.images)], data.images)  # the bank's drawings as they were
    parents = sorted(split.train.tolist())
    for number, c in enumerate(ids):
        first, second, axis = recombination(parents, data, 0, number)
        assert first != second and data.alphabet_of(first) == data.alphabet_of(second) == new.alphabet_of(c)
        assert {first, second} <= set(split.train.tolist())
        np.testing.assert_array_equal(new.drawer[new.character == c], np.arange(1, 21))
        assert new.characters[c] == f"{data.alphabet_of(first)}/recombined{number:04d}"
    assert np.all(np.diff(new.character) >= 0)  # sorted by character, as the class table needs


def test_a_drawing_is_its_parents_drawings_by_the_same_drawer_joined(minimal, recombined, omniglot_dir):
    data, split = minimal
    new, _ = recombined
    strokes = {(d.character, d.drawer): d.strokes for d in load_strokes(data, split, "train", omniglot_dir,
                                                                          download_missing=False)}
    first, second, axis = recombination(sorted(split.train.tolist()), data, 0, 3)
    c = len(data.characters) + 3
    for drawer in (1, 7):
        expected = small_drawing(joined(strokes[data.characters[first], drawer],
                                        strokes[data.characters[second], drawer], axis))
        np.testing.assert_array_equal(new.images[(new.character == c) & (new.drawer == drawer)][0], expected)
    images = new.images[new.character == c].astype(np.int16)
    assert all(np.abs(images[0] - other).sum() > 0 for other in images[1:])  # each drawer's own drawing


def test_character_i_does_not_depend_on_how_many_are_made(minimal, recombined, omniglot_dir):
    data, split = minimal
    fewer, _ = with_new_characters(data, split, 2, seed=0, data_dir=omniglot_dir, download_missing=False)
    other_seed, _ = with_new_characters(data, split, 2, seed=1, data_dir=omniglot_dir, download_missing=False)
    new, _ = recombined
    np.testing.assert_array_equal(fewer.images, new.images[:len(fewer.images)])
    assert not np.array_equal(other_seed.images, fewer.images)


def test_only_meta_train_strokes_are_read(minimal, omniglot_dir, monkeypatch):
    data, split = minimal
    asked = []

    def load_strokes(*args, **kwargs):
        asked.append((args[2], kwargs.get("evaluation", False)))
        return real(*args, **kwargs)

    real = new_characters.load_strokes
    monkeypatch.setattr(new_characters, "load_strokes", load_strokes)
    with_new_characters(data, split, 1, seed=0, data_dir=omniglot_dir, download_missing=False)
    assert asked == [("train", False)]


def test_the_problem_gets_new_characters_in_meta_training_alone(minimal, omniglot_dir):
    data, split = minimal
    config = Config(queries=2, seed=3)
    plain, more = (build_problem(config.replace(stroke_characters=m), omniglot_dir) for m in (0, COUNT))
    assert tuple(more.tasks["train"].class_images.shape) == (4 * (len(split.train) + COUNT), 20)  # 4 rotations
    for part in ("val", "test"):
        assert torch.equal(more.tasks[part].bank, plain.tasks[part].bank)
        assert torch.equal(more.tasks[part].class_images, plain.tasks[part].class_images)
    today = omniglot_tasks(data, split, "train", 5, 1, 2, ROTATIONS)
    assert tuple(today.class_images.shape) == tuple(plain.tasks["train"].class_images.shape)


def test_bad_requests_are_one_line_errors(minimal, omniglot_dir, capsys):
    data, split = minimal
    with pytest.raises(MetalabError, match="--stroke-characters must be a finite number >= 0"):
        Config(stroke_characters=-1)
    with pytest.raises(MetalabError, match="--stroke-characters.*do not apply to sinusoids"):
        Config(problem="sinusoid", stroke_characters=2)
    with pytest.raises(MetalabError, match="use one of the two"):
        Config(stroke_characters=2, stroke_drawers=1)
    lonely = dataclasses.replace(split, train=split.train[:1])  # one character of its alphabet: no partner
    with pytest.raises(MetalabError, match="has one meta-train character"):
        with_new_characters(data, lonely, 1, 0, omniglot_dir, download_missing=False)
    assert main(["train", "--preset", "omniglot-demo", "--stroke-characters", "2", "--stroke-drawers", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "use one of the two" in err


def test_train_command_takes_the_option(tmp_path, omniglot_dir):
    assert train_tiny(tmp_path / "run", omniglot_dir, "omniglot-demo", "--stroke-characters", "3").is_file()
