"""New drawers from strokes: K re-drawings of every meta-training drawing (data/new_drawers.py, --stroke-drawers)."""

import dataclasses
import os

import numpy as np
import pytest
import torch
from conftest import train_tiny

from metalab.cli.main import main
from metalab.config import Config
from metalab.data import download, new_drawers
from metalab.data.classification import ROTATIONS, omniglot_tasks
from metalab.data.episode import generator_for
from metalab.data.new_drawers import with_new_drawers
from metalab.data.omniglot import Omniglot
from metalab.data.render_check import ink_iou
from metalab.data.splits import Split
from metalab.errors import MetalabError
from metalab.problem import build_problem


def _few(split: Split, every: int = 29) -> Split:
    """The split with 4 meta-train characters (every 29th: one of each of four alphabets), or fewer."""
    return dataclasses.replace(split, train=split.train[::every])


@pytest.fixture(scope="module")
def redrawn(minimal, omniglot_dir):
    """(the 4-character split, its meta-train drawings with 2 re-drawings each, seed 0)."""
    few = _few(minimal[1])
    return few, with_new_drawers(minimal[0], few, 2, seed=0, data_dir=omniglot_dir, download_missing=False)


def _versions(new: Omniglot, characters: int) -> np.ndarray:
    """uint8 [characters, 1 + K, 20, 28, 28]: each drawing, then its re-drawings (sorted by drawer d + r * 20)."""
    return new.images.reshape(characters, -1, 20, 28, 28)


def test_each_class_holds_its_drawings_then_k_redrawings_of_each(minimal, redrawn):
    data, _ = minimal
    few, new = redrawn
    assert np.array_equal(np.unique(new.character), few.train)  # the meta-train characters alone
    for c in few.train:
        mine = new.character == c
        np.testing.assert_array_equal(new.drawer[mine], np.arange(1, 61))  # 20 drawers, then 2 x 20 new ones
        np.testing.assert_array_equal(new.images[mine][:20], data.images[data.character == c])  # the bank's own
    assert new.characters == data.characters and new.images.dtype == np.uint8


def _tolerant_ink(image: np.ndarray) -> np.ndarray:
    """bool [28, 28]: the ink (>= 128) grown by one pixel in every direction."""
    padded = np.pad(image >= 128, 1)
    return np.logical_or.reduce([padded[i:i + 28, j:j + 28] for i in range(3) for j in range(3)])


def test_redrawings_differ_but_keep_the_original_ink(redrawn):
    few, new = redrawn
    versions = _versions(new, len(few.train)).astype(np.int16)
    for first, second in ((0, 1), (0, 2), (1, 2)):  # no re-drawing equals its original or its sibling
        assert (np.abs(versions[:, first] - versions[:, second]).sum(axis=(-1, -2)) > 255).all()
    # A stroke is 1-2 pixels wide at 28x28, so moving it by one pixel (what the jitter and shifts do at this size)
    # leaves little plain overlap; with one pixel of tolerance a re-drawing keeps most of its original's ink. The
    # same measure between two real drawers of a character averages about 0.4, and two characters about 0.33, so
    # 0.6 on average and 0.4 for every re-drawing say "this drawing, redrawn", not another drawing or character.
    def overlap(a, b):
        return ink_iou(_tolerant_ink(a), _tolerant_ink(b))

    redrawings = [overlap(versions[c, 0, d], versions[c, r, d]) for c in range(len(few.train))
                  for r in (1, 2) for d in range(20)]
    other_drawers = [overlap(versions[c, 0, d], versions[c, 0, (d + 1) % 20]) for c in range(len(few.train))
                     for d in range(20)]
    assert np.mean(redrawings) > 0.6 and min(redrawings) > 0.4
    assert np.mean(other_drawers) < 0.5  # the measure does tell drawings apart


def test_the_seed_and_the_drawing_alone_fix_a_redrawing(minimal, omniglot_dir, redrawn):
    data, _ = minimal
    few, new = redrawn
    again = with_new_drawers(data, few, 2, seed=0, data_dir=omniglot_dir, download_missing=False)
    np.testing.assert_array_equal(again.images, new.images)
    # Fewer characters and fewer re-drawings: the same first re-drawing of each drawing still.
    two = _few(minimal[1], 58)
    assert set(two.train) < set(few.train)
    fewer = with_new_drawers(data, two, 1, seed=0, data_dir=omniglot_dir, download_missing=False)
    kept = np.isin(few.train, two.train)
    np.testing.assert_array_equal(_versions(fewer, 2), _versions(new, 4)[kept][:, :2])
    other = _versions(with_new_drawers(data, two, 1, seed=1, data_dir=omniglot_dir, download_missing=False), 2)
    np.testing.assert_array_equal(other[:, 0], _versions(fewer, 2)[:, 0])  # the drawings themselves
    assert (other[:, 1] != _versions(fewer, 2)[:, 1]).any(axis=(-1, -2)).all()  # every re-drawing changes


def test_only_meta_train_strokes_are_read(minimal, omniglot_dir, monkeypatch):
    data, split = minimal
    asked = []

    def load_strokes(data, split, part, *args, **kwargs):
        asked.append((part, kwargs.get("evaluation", False)))
        return real(data, split, part, *args, **kwargs)

    real = new_drawers.load_strokes
    monkeypatch.setattr(new_drawers, "load_strokes", load_strokes)
    new = with_new_drawers(data, _few(split, 58), 1, seed=0, data_dir=omniglot_dir, download_missing=False)
    assert asked == [("train", False)]  # never evaluation's held-out strokes
    assert not np.isin(new.character, np.concatenate([split.val, split.test])).any()
    with pytest.raises(MetalabError, match="meta-test characters are held-out"):  # the reader's own guarantee
        real(data, split, "test", omniglot_dir, download_missing=False)


def test_the_problem_gets_redrawings_in_meta_training_alone(minimal, omniglot_dir):
    data, split = minimal
    config = Config(queries=2, seed=3)
    plain = build_problem(config, omniglot_dir)
    zero, two = (build_problem(config.replace(stroke_drawers=k), omniglot_dir) for k in (0, 2))
    characters = len(split.train)
    assert tuple(two.tasks["train"].class_images.shape) == (4 * characters, 60)  # 4 rotations, 20 * (1 + 2)
    assert two.tasks["train"].bank.shape[0] == 4 * 60 * characters
    for part in ("val", "test"):
        assert torch.equal(two.tasks[part].bank, plain.tasks[part].bank)
        assert torch.equal(two.tasks[part].class_images, plain.tasks[part].class_images)
    # K = 0 is today's sampler, random numbers and all: the same episodes as the tasks built without the option.
    today = omniglot_tasks(data, split, "train", 5, 1, 2, ROTATIONS)
    episodes = [tasks.sample(generator_for(3, 7), 4) for tasks in (plain.tasks["train"], zero.tasks["train"], today)]
    for first, second in zip(episodes[0], episodes[1]):
        assert torch.equal(first, second)
    for first, second in zip(episodes[0], episodes[2]):
        assert torch.equal(first, second)
    redrawn = two.tasks["train"].sample(generator_for(3, 7), 4)
    assert not torch.equal(redrawn.support_x, episodes[0].support_x)


def test_bad_requests_are_one_line_errors(minimal, omniglot_dir, tmp_path, monkeypatch):
    with pytest.raises(MetalabError, match="--stroke-drawers must be a finite number >= 0"):
        Config(stroke_drawers=-1)
    with pytest.raises(MetalabError, match="--stroke-drawers.*do not apply to sinusoids"):
        Config(problem="sinusoid", stroke_drawers=2)
    # Image archives without their strokes, and no network: the missing archive and the command that fetches it.
    for name in ("images_background_small1", "images_background_small2"):
        os.symlink(omniglot_dir / f"{name}.zip", tmp_path / f"{name}.zip")
    monkeypatch.setattr(download, "BACKOFF_S", 0.0)
    monkeypatch.setenv(download.URL_ENV, "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("no_proxy", "*")
    for request in (lambda: build_problem(Config(stroke_drawers=1), tmp_path, parts=("train",)),
                    lambda: with_new_drawers(*minimal, 1, 0, tmp_path, download_missing=False)):
        with pytest.raises(MetalabError) as error:
            request()
        message = str(error.value)
        assert "\n" not in message and "metalab data fetch" in message
        assert "strokes_background_small1.zip" in message and "strokes_background_small2.zip" in message
    # Drawings of a split without strokes archives (the full background set): named in one line.
    lake = Omniglot(np.zeros((20, 28, 28), np.uint8), np.zeros(20, np.int64), np.arange(1, 21),
                    ("Alphabet/character01",), (frozenset({"images_background"}),))
    no_ids = np.zeros(0, np.int64)
    with pytest.raises(MetalabError, match="no strokes archive is known for images_background"):
        with_new_drawers(lake, Split("lake", np.array([0]), no_ids, no_ids), 1, 0, omniglot_dir)


def test_train_command_takes_the_option(tmp_path, omniglot_dir):
    assert train_tiny(tmp_path / "run", omniglot_dir, "omniglot-demo", "--stroke-drawers", "1", "--train-alphabets",
                      "1").is_file()
    assert main(["train", "--preset", "omniglot-demo", "--stroke-drawers", "-1"]) == 2
