"""`metalab data info|show|fetch`, called in-process through cli.main.main."""

import pytest
from PIL import Image

from metalab.cli.main import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_info_prints_the_counts(capsys, omniglot_dir, minimal):
    code, out, err = run(capsys, "data", "info", "--data-dir", str(omniglot_dir), "--no-download")
    assert code == 0, err
    assert "split minimal" in out
    assert "train: 5 alphabets, 116 characters, 2320 images" in out
    assert "val: 5 alphabets, 20 characters, 400 images" in out
    assert "test: 3 alphabets, 106 characters, 2120 images" in out
    for alphabet in ("Japanese_(katakana): 47 characters", "Sanskrit: 42 characters", "Tagalog: 17 characters"):
        assert alphabet in out


def test_info_reads_the_data_folder_from_the_environment(capsys, omniglot_dir, minimal, monkeypatch):
    monkeypatch.setenv("METALAB_DATA", str(omniglot_dir))
    code, out, err = run(capsys, "data", "info", "--no-download")
    assert code == 0, err
    assert "test: 3 alphabets, 106 characters, 2120 images" in out


def test_show_writes_a_png(capsys, omniglot_dir, minimal, tmp_path):
    target = tmp_path / "pictures" / "episodes.png"
    code, out, err = run(capsys, "data", "show", "--data-dir", str(omniglot_dir), "--no-download", "--part", "test",
                         "--ways", "3", "--shots", "2", "--queries", "2", "--tasks", "2", "--out", str(target))
    assert code == 0, err
    assert str(target) in out
    with Image.open(target) as image:
        assert image.format == "PNG"
        width, height = image.size
        image.verify()
    assert width > height > 100  # 2 rows of 6 + 6 pictures
    assert [p.name for p in target.parent.iterdir()] == ["episodes.png"]  # no temporary left behind


def test_show_with_too_many_ways_exits_2_with_the_reason(capsys, omniglot_dir, minimal, tmp_path):
    target = tmp_path / "never.png"
    code, out, err = run(capsys, "data", "show", "--data-dir", str(omniglot_dir), "--no-download", "--ways", "30",
                         "--part", "val", "--out", str(target))
    assert code == 2
    assert err.startswith("metalab: error: ")
    assert "30-way tasks need 30 classes but this split has only 20" in err and "--ways" in err
    assert "Traceback" not in err and not target.exists()


def test_fetch_without_download_names_the_missing_files(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = run(capsys, "data", "fetch", "--data-dir", str(empty), "--no-download")
    assert code == 2
    assert "images_background_small1.zip" in err and "images_background_small2.zip" in err
    assert str(empty) in err
    assert list(empty.iterdir()) == []


def test_fetch_reports_verified_archives(capsys, omniglot_dir):
    code, out, err = run(capsys, "data", "fetch", "--data-dir", str(omniglot_dir), "--no-download")
    assert code == 0, err
    assert "images_background_small1" in out and "f38eb80f801274ac2b4dff5b24289016bfaba4a7d5bb50deebf27104ad6cb8a4" in out


def test_unknown_split_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["data", "info", "--split", "everything"])
    assert exit_.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
