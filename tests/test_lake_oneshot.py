"""Lake's one-shot benchmark loader and scorer, on a small copy of its layout built from real Omniglot drawings.

The fixture follows all_runs.zip exactly (runNN/training/classKK.png, runNN/test/itemMM.png,
runNN/class_labels.txt) with 3 runs, each 20 characters of one alphabet: one drawer's drawing as the
class image, another drawer's as the test item, test items in shuffled order.
"""

import io
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from lake_runs import write_lake_runs
from PIL import Image

from metalab.data import lake_oneshot
from metalab.data.episode import Episode
from metalab.data.lake_oneshot import as_episode, format_table, load_runs, score
from metalab.data.omniglot import Preprocessing, preprocess_image
from metalab.errors import MetalabError


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """The fixture written as a folder, a zip with one top folder and a flat zip, plus what it wrote."""
    return write_lake_runs(tmp_path_factory.mktemp("lake"))


@pytest.fixture(scope="module")
def runs(bench):
    return load_runs(bench["folder"])


def _preprocessed(png: bytes, settings=Preprocessing()) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        return preprocess_image(image, settings, "test")


@pytest.mark.parametrize("form", ["folder", "nested", "flat"])
def test_shapes_and_labels(bench, form):
    runs = load_runs(bench[form])
    assert runs.names == ("run01", "run02", "run03")
    assert runs.support_x.shape == (3, 20, 1, 28, 28) and runs.support_x.dtype == torch.float32
    assert runs.query_x.shape == (3, 20, 1, 28, 28) and runs.query_x.dtype == torch.float32
    assert runs.support_y.dtype == torch.int64 and runs.query_y.dtype == torch.int64
    assert torch.equal(runs.support_y, torch.arange(20).repeat(3, 1))
    np.testing.assert_array_equal(runs.query_y.numpy(), bench["labels"])
    for x in (runs.support_x, runs.query_x):
        assert x.min() >= 0 and x.max() <= 1 and x.max() == 1  # ink is high and reaches 1


def test_folder_and_zips_agree(bench, runs):
    for form in ("nested", "flat"):
        other = load_runs(bench[form])
        for a, b in zip(as_episode(runs), as_episode(other), strict=True):
            assert torch.equal(a, b)


def test_folder_one_level_up_is_accepted(bench, runs):
    assert torch.equal(load_runs(bench["root"] / "all_runs").query_x, runs.query_x)
    # bench["root"] holds all_runs/ (plus the zips): the single folder holding run folders is used.
    assert torch.equal(load_runs(bench["root"]).query_y, runs.query_y)


@pytest.mark.parametrize("settings", [Preprocessing(), Preprocessing(size=14, resample="box")])
def test_preprocessing_equals_training_pipeline(bench, settings):
    runs = load_runs(bench["nested"], settings)
    s = settings.size
    assert runs.support_x.shape == (3, 20, 1, s, s)
    for r in range(3):
        for k in range(20):
            for tensor, png in ((runs.support_x, bench["classes"][r][k]), (runs.query_x, bench["items"][r][k])):
                want = _preprocessed(png, settings)
                assert want.dtype == np.uint8
                got = tensor[r, k, 0].numpy()
                np.testing.assert_array_equal(np.rint(got * 255).astype(np.uint8), want)
                np.testing.assert_allclose(got, want / 255.0, rtol=0, atol=1e-6)


def test_as_episode(runs):
    episode = as_episode(runs)
    assert isinstance(episode, Episode)
    assert episode.batch_size == 3
    assert episode.support_x.shape == (3, 20, 1, 28, 28) and episode.query_x.shape == (3, 20, 1, 28, 28)
    assert episode.support_y.shape == (3, 20) and episode.query_y.shape == (3, 20)
    assert torch.equal(episode.task(1).query_y, runs.query_y[1:2])


def test_nearest_neighbour_error_matches_independent_count(bench, runs):
    episode = as_episode(runs)
    flat_support = episode.support_x.flatten(2)  # [R, 20, 784]
    flat_query = episode.query_x.flatten(2)
    nearest = torch.cdist(flat_query.double(), flat_support.double()).argmin(-1)  # [R, 20] index into support
    predicted = episode.support_y.gather(1, nearest)
    result = score(runs, predicted)

    # Independently: straight from the PNGs and the labels the fixture wrote.
    expected = []
    for r in range(3):
        support = np.stack([_preprocessed(p).astype(np.float64).ravel() for p in bench["classes"][r]])
        wrong = 0
        for m, png in enumerate(bench["items"][r]):
            query = _preprocessed(png).astype(np.float64).ravel()
            guess = int(np.argmin(((support - query) ** 2).sum(axis=1)))
            wrong += guess != bench["labels"][r][m]
        expected.append(100.0 * wrong / 20)
    np.testing.assert_allclose(result.errors, expected)
    assert result.mean == pytest.approx(np.mean(expected))
    assert result.names == ("run01", "run02", "run03")
    assert 0 < result.mean < 100  # pixel-space nearest neighbour is far from perfect, and far from always wrong


def test_perfect_and_constant_predictors(bench, runs):
    perfect = score(runs, runs.query_y.clone())
    assert perfect.mean == 0 and np.all(perfect.errors == 0)
    assert score(runs, bench["labels"].tolist()).mean == 0  # nested lists and numpy work too
    for label in (0, 7):
        constant = score(runs, np.full((3, 20), label))
        want = 100.0 * (bench["labels"] != label).mean(axis=1)
        np.testing.assert_allclose(constant.errors, want)
        np.testing.assert_allclose(constant.errors, 95.0)  # each class has exactly one test item
        assert constant.mean == pytest.approx(95.0)


def test_format_table(runs):
    predicted = runs.query_y.clone()
    predicted[1, :5] = (predicted[1, :5] + 1) % 20  # 5 of 20 wrong in run02
    result = score(runs, predicted)
    np.testing.assert_allclose(result.errors, [0.0, 25.0, 0.0])
    lines = format_table(result).splitlines()
    assert lines[0].split() == ["run", "error", "%"]
    assert [line.split() for line in lines[1:]] == [["run01", "0.00"], ["run02", "25.00"], ["run03", "0.00"],
                                                    ["mean", "8.33"]]


def test_score_rejects_bad_predictions(runs):
    with pytest.raises(MetalabError, match="shape"):
        score(runs, torch.zeros(3, 19, dtype=torch.int64))
    with pytest.raises(MetalabError, match="integers"):
        score(runs, torch.zeros(3, 20))


def test_runs_are_in_run_number_order(bench, tmp_path):
    folder = tmp_path / "runs"
    shutil.copytree(bench["folder"], folder)
    (folder / "run01").rename(folder / "run12")
    labels = folder / "run12" / "class_labels.txt"
    labels.write_text(labels.read_text().replace("run01/", "run12/"))
    runs = load_runs(folder)
    assert runs.names == ("run02", "run03", "run12")
    np.testing.assert_array_equal(runs.query_y.numpy(), bench["labels"][[1, 2, 0]])


def test_load_benchmark_uses_the_all_runs_archive(bench, runs, monkeypatch, tmp_path):
    calls = []

    def fake(names, data_dir, download=True):
        calls.append((list(names), Path(data_dir), download))
        return {"all_runs": (bench["nested"], "0" * 64)}

    monkeypatch.setattr(lake_oneshot.download, "ensure_archives", fake, raising=False)
    loaded = lake_oneshot.load_benchmark(tmp_path, download_missing=False)
    assert calls == [(["all_runs"], tmp_path, False)]
    assert torch.equal(loaded.query_x, runs.query_x)


# ---- broken layouts -------------------------------------------------------------------------------------


@pytest.fixture
def broken(bench, tmp_path):
    folder = tmp_path / "all_runs"
    shutil.copytree(bench["folder"], folder)
    return folder


def _rewrite_line(folder: Path, run: str, number: int, new_line: str):
    path = folder / run / "class_labels.txt"
    lines = path.read_text().splitlines()
    lines[number] = new_line
    path.write_text("\n".join(lines) + "\n")


def test_labels_line_naming_missing_file(broken):
    _rewrite_line(broken, "run02", 3, "run02/test/item04.png run02/training/class21.png")
    with pytest.raises(MetalabError, match=r"class_labels\.txt line 4.*run02/training/class21\.png.*does not exist"):
        load_runs(broken)


def test_labels_line_that_does_not_parse(broken):
    _rewrite_line(broken, "run01", 0, "run01/test/item01.png")
    with pytest.raises(MetalabError, match=r"run01/class_labels\.txt line 1 .*does not parse"):
        load_runs(broken)
    _rewrite_line(broken, "run01", 0, "run01/test/item01.png run03/training/class01.png")
    with pytest.raises(MetalabError, match="another run"):
        load_runs(broken)


def test_labels_missing_an_item(broken):
    _rewrite_line(broken, "run03", 5, "")
    with pytest.raises(MetalabError, match="gives no class for item06"):
        load_runs(broken)


def test_labels_item_twice(broken):
    _rewrite_line(broken, "run03", 5, "run03/test/item01.png run03/training/class01.png")
    with pytest.raises(MetalabError, match="item01 a second time"):
        load_runs(broken)


def test_small_image(broken, tmp_path):
    Image.new("L", (50, 50), 255).save(broken / "run02" / "test" / "item07.png")
    with pytest.raises(MetalabError, match=r"run02/test/item07\.png: image is 50x50.*105x105"):
        load_runs(broken)
    archive = tmp_path / "broken.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for file in sorted(broken.rglob("*")):
            if file.is_file():
                out.write(file, "all_runs/" + file.relative_to(broken).as_posix())
    with pytest.raises(MetalabError, match=r"broken\.zip:all_runs/run02/test/item07\.png: image is 50x50"):
        load_runs(archive)


def test_missing_files_and_runs(broken, tmp_path):
    (broken / "run01" / "training" / "class05.png").unlink()
    with pytest.raises(MetalabError, match=r"run01/training/class05\.png is missing"):
        load_runs(broken)
    shutil.rmtree(broken / "run01")
    (broken / "run02" / "class_labels.txt").unlink()
    with pytest.raises(MetalabError, match=r"run02/class_labels\.txt is missing"):
        load_runs(broken)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MetalabError, match="no run folders"):
        load_runs(empty)
    with pytest.raises(MetalabError, match="does not exist"):
        load_runs(tmp_path / "nowhere.zip")


def test_unreadable_files(broken, tmp_path):
    (broken / "run03" / "test" / "item02.png").write_bytes(b"not a png")
    with pytest.raises(MetalabError, match=r"run03/test/item02\.png is not a readable PNG"):
        load_runs(broken)
    bad_zip = tmp_path / "all_runs.zip"
    bad_zip.write_bytes(b"not a zip")
    with pytest.raises(MetalabError, match="not a readable zip"):
        load_runs(bad_zip)
