"""Omniglot's strokes: the archives (data/archives.py), the reader (data/strokes.py), the renderer (data/render.py)
and its check against the PNGs (data/render_check.py)."""

import dataclasses
import zipfile

import numpy as np
import pytest

from metalab.data import download
from metalab.data.new_drawers import REDRAWING
from metalab.data.render import image_points, rasterize, render_drawing, small_drawing
from metalab.data.render_check import render_iou
from metalab.data.stroke_augment import augment_strokes
from metalab.data.strokes import load_strokes, parse_strokes, read_strokes_archive
from metalab.errors import MetalabError

TEXT = "START\n1.5,-2,0\n3,-2.5,17\nBREAK\n4,-4,30\nBREAK\n"


def test_parser_splits_strokes_at_each_pen_up():
    first, second = parse_strokes(TEXT, "x.txt")
    np.testing.assert_array_equal(first, [[1.5, -2, 0], [3, -2.5, 17]])
    np.testing.assert_array_equal(second, [[4, -4, 30]])
    assert len(parse_strokes("START\n1,2,3\n", "x.txt")) == 1  # a last stroke without BREAK still counts
    with pytest.raises(MetalabError, match="line 3"):
        parse_strokes("START\n1,2,3\n1;2;3\n", "x.txt")
    with pytest.raises(MetalabError, match="no pen samples"):
        parse_strokes("START\nBREAK\n", "x.txt")


def test_reader_skips_macos_metadata_and_other_characters(tmp_path):
    path = tmp_path / "strokes_background_small1.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("strokes_background_small1/.DS_Store", b"\0\1binary")
        archive.writestr("__MACOSX/strokes_background_small1/Alpha/character01/._0001_02.txt", b"\0\1")
        archive.writestr("strokes_background_small1/Alpha/character01/0001_02.txt", TEXT)
        archive.writestr("strokes_background_small1/Alpha/character01/0001_01.txt", "START\n5,-5,0\nBREAK\n")
        archive.writestr("strokes_background_small1/Beta/character01/0009_01.txt", "not strokes")
    drawings = read_strokes_archive(path, {"Alpha/character01"})
    assert [(d.character, d.drawer, d.file) for d in drawings] == [("Alpha/character01", 1, "0001_01"),
                                                                   ("Alpha/character01", 2, "0001_02")]
    assert len(drawings[1].strokes) == 2  # Beta's file is never parsed
    with pytest.raises(MetalabError, match="not 'x,y,t'"):
        read_strokes_archive(path, {"Beta/character01"})


def test_a_segment_is_inked_where_pixel_centres_lie_within_half_the_pen():
    # Centres (j + 0.5, i + 0.5); a segment from column 2 to 6 along row 2, pen radius 1: rows 1 and 2 (centres
    # 0.5 away), columns whose centres are within 1 of the segment: 1..6 (centre 1.5 is sqrt(0.5^2 + 0.5^2) away).
    ink = rasterize([np.array([[2.0, 2.0], [6.0, 2.0]])], size=10, pen_width=2.0, extent=10)
    expected = np.zeros((10, 10), bool)
    expected[1:3, 1:7] = True
    np.testing.assert_array_equal(ink, expected)
    # A stroke of one sample is a dot: the four centres sqrt(0.5) away from (5, 5).
    dot = rasterize([np.array([[5.0, 5.0]])], size=10, pen_width=2.0, extent=10)
    assert set(zip(*np.nonzero(dot))) == {(4, 4), (4, 5), (5, 4), (5, 5)}
    # At half the resolution a pixel covers 2 units: centres (1, 1), (1, 3), ...: the dot reaches none but (2, 2).
    coarse = rasterize([np.array([[5.0, 5.0]])], size=5, pen_width=2.0, extent=10)
    assert set(zip(*np.nonzero(coarse))) == {(2, 2)}


def test_strokes_y_counts_upward_in_pixel_indices():
    stroke = np.array([[19.0, -31.0, 0.0], [40.0, -31.0, 50.0]])
    np.testing.assert_array_equal(image_points(stroke), [[19.5, 31.5], [40.5, 31.5]])
    image = np.asarray(render_drawing((stroke,), pen_width=1.0).convert("L"))
    assert image.shape == (105, 105) and set(np.unique(image)) == {0, 255}
    rows, columns = np.nonzero(image == 0)  # ink dark, as the PNGs
    assert set(rows) == {31} and (columns.min(), columns.max()) == (19, 40)
    small = small_drawing((stroke,))
    assert small.shape == (28, 28) and small.dtype == np.uint8 and small[8].max() > 100  # row 31.5 * 28 / 105


def test_the_downloader_knows_the_strokes_archives(omniglot_dir):
    for name in ("strokes_background_small1", "strokes_background_small2"):
        assert download.ARCHIVES[name].url == f"{download.BASE_URL}/{name}.zip"
    found = download.ensure_archives(["strokes_background_small1", "strokes_background_small2"], omniglot_dir,
                                     download=False)
    assert found["strokes_background_small2"][1] == download.ARCHIVES["strokes_background_small2"].sha256


def test_held_out_strokes_are_refused_unless_for_evaluation(minimal, omniglot_dir):
    data, split = minimal
    for part in ("val", "test"):
        with pytest.raises(MetalabError, match=f"meta-{part} characters are held-out"):
            load_strokes(data, split, part, omniglot_dir, download_missing=False)
    test = load_strokes(data, split, "test", omniglot_dir, download_missing=False, evaluation=True)
    assert {d.character.split("/")[0] for d in test} == {"Japanese_(katakana)", "Sanskrit", "Tagalog"}
    assert len(test) == 20 * len(split.test)


def test_train_strokes_are_the_train_characters_alone_and_render_like_their_pngs(minimal, omniglot_dir):
    data, split = minimal
    train = load_strokes(data, split, "train", omniglot_dir, download_missing=False)
    assert len(train) == 20 * len(split.train)
    assert {d.character for d in train} == {data.characters[c] for c in split.train}
    few = dataclasses.replace(split, train=split.train[::29])  # 4 characters, 80 drawings
    check = render_iou(data, few, "train", omniglot_dir, download_missing=False)
    assert check["drawings"] == 80 and check["mean_iou_105"] > 0.9 and check["mean_iou_28"] > 0.9
    thin = render_iou(data, few, "train", omniglot_dir, download_missing=False, pen_width=2.0)
    assert thin["mean_iou_105"] < check["mean_iou_105"] - 0.2  # the check can tell a wrong pen apart


def _rasterize_segment_by_segment(strokes, size, pen_width, extent=105.0):
    """The renderer as first written, one segment at a time: the reference of the vectorized one."""
    radius = pen_width / 2
    nearest = np.full((size, size), np.inf)
    for stroke in strokes:
        points = np.asarray(stroke, dtype=np.float64)
        for a, b in zip(points[:-1] if len(points) > 1 else points, points[1:] if len(points) > 1 else points):
            low = np.ceil((np.minimum(a, b) - radius) * size / extent - 0.5).astype(int).clip(0, size)
            high = np.floor((np.maximum(a, b) + radius) * size / extent - 0.5).astype(int).clip(-1, size - 1)
            if np.any(high < low):
                continue
            columns = (np.arange(low[0], high[0] + 1) + 0.5) * (extent / size)
            rows = (np.arange(low[1], high[1] + 1) + 0.5) * (extent / size)
            centres = np.stack(np.meshgrid(columns, rows, indexing="xy"), axis=-1)
            direction = b - a
            length2 = float(direction @ direction)
            along = 0.0 if length2 == 0 else np.clip((centres - a) @ direction / length2, 0, 1)[..., None]
            distance2 = ((centres - a - along * direction) ** 2).sum(axis=-1)
            block = nearest[low[1]:high[1] + 1, low[0]:high[0] + 1]
            np.minimum(block, distance2, out=block)
    return nearest <= radius**2


def test_the_vectorized_renderer_inks_exactly_the_pixels_of_the_segment_loop(minimal, omniglot_dir):
    data, split = minimal
    drawings = load_strokes(data, split, "train", omniglot_dir, download_missing=False)[::20]  # 116, every alphabet
    rng = np.random.default_rng(0)
    cases = [([image_points(s) for s in d.strokes], 5.0) for d in drawings]
    for d in drawings:  # re-drawn ones: arbitrary coordinates, other pens, strokes partly off the drawing
        strokes, pen_width = augment_strokes(d.strokes, rng, REDRAWING)
        cases.append(([image_points(s) * 1.3 - 10 for s in strokes], pen_width))
    # dots, a repeated sample, and pixel centres exactly half a pen away (rows 1.5 and 3.5 of a segment on 2.5)
    cases.append(([np.array([[5.0, 5.0]]), np.array([[7.0, 7.0], [7.0, 7.0], [9.5, 3.25]]),
                   np.array([[2.0, 2.5], [6.0, 2.5]])], 2.0))
    for points, pen_width in cases:
        for size in (105, 28):
            np.testing.assert_array_equal(rasterize(points, size, pen_width),
                                          _rasterize_segment_by_segment(points, size, pen_width))
