"""Study alphabet-shift on the tiny budget: the report's tables, plots and files hold the numbers computed, checked
against `metalab eval` of the same checkpoints and against Lake's benchmark on a small all_runs.zip."""

import csv
import dataclasses
import math
import os

import numpy as np
import pytest
from conftest import run_tiny_study
from lake_runs import write_lake_runs

from metalab.cli.main import main
from metalab.data import download
from metalab.data.classification import alphabet_tasks, omniglot_tasks
from metalab.data.episode import fixed_episodes
from metalab.data.splits import load_split_data
from metalab.evaluation.checkpoints import evaluate_checkpoint, image_method
from metalab.evaluation.evaluate import per_episode_scores
from metalab.evaluation.lake import evaluate_lake
from metalab.studies.alphabet_report import PART_NAMES
from metalab.studies.tables import estimate_cell

EPISODES = 20  # the tiny budget's default


@pytest.fixture(scope="module")
def data_with_lake(tmp_path_factory, omniglot_dir):
    """A data folder with the minimal Omniglot archives and a small all_runs.zip (its md5 accepted)."""
    folder = tmp_path_factory.mktemp("data")
    for name in ("images_background_small1.zip", "images_background_small2.zip"):
        (folder / name).symlink_to(omniglot_dir / name)
    bench = write_lake_runs(tmp_path_factory.mktemp("lake"))
    (folder / "all_runs.zip").write_bytes(bench["nested"].read_bytes())
    with pytest.MonkeyPatch.context() as patch:
        md5, _ = download.file_digests(folder / "all_runs.zip")
        patch.setitem(download.ARCHIVES, "all_runs", dataclasses.replace(download.ARCHIVES["all_runs"], md5=md5))
        yield folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, data_with_lake):
    out = tmp_path_factory.mktemp("study")
    cells, report = run_tiny_study("alphabet-shift", out, data_with_lake)
    return {"out": out, "cells": cells, "report": report,
            "maml": out / "train" / "maml" / "best.pt", "average": out / "train" / "average" / "best.pt"}


def rows(tiny, **match):
    return [row for cell in tiny["cells"].values() for row in cell["rows"]
            if all(row.get(k) == v for k, v in match.items())]


def test_the_files_and_plots_exist(tiny):
    out = tiny["out"]
    for name in ("report.md", "results.csv", "results.json", "alphabet_shift_5way.png", "alphabet_shift_20way.png"):
        assert (out / name).stat().st_size > 0
    for plot in ("alphabet_shift_5way.png", "alphabet_shift_20way.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"]({plot})" in tiny["report"]
    assert {row["model"] for row in rows(tiny)} == {"maml (maml)", "average (average)"}


def test_each_number_is_its_episodes_mean_and_interval_and_is_in_the_report(tiny):
    scored = [cell for cell in tiny["cells"].values() if "scores" in cell]
    # maml 5-way, average 5-way, average 20-way: groups with enough characters; meta-train's five alphabets and mixed
    assert len(scored) == 6 + 6 + 4 + 3 * 6
    for cell in scored:
        (row,) = cell["rows"]
        scores = np.array(cell["scores"])
        assert row["n"] == scores.size == EPISODES
        assert row["mean"] == pytest.approx(scores.mean())
        assert row["ci95"] == pytest.approx(1.96 * scores.std(ddof=1) / math.sqrt(scores.size))
        line = next(line for line in tiny["report"].splitlines()
                    if line.startswith(f"| {PART_NAMES[row['part']]} | "
                                       f"{'mixed' if row['alphabet'] == 'mixed' else 'within ' + row['alphabet']} |")
                    and f"{row['ways']}-way" in _section_of(tiny["report"], line))
        assert estimate_cell(row["mean"], row["ci95"], "accuracy") in line
    csv_rows = list(csv.DictReader((tiny["out"] / "results.csv").open()))
    assert len(csv_rows) == sum(len(cell["rows"]) for cell in tiny["cells"].values())


def _section_of(report: str, line: str) -> str:
    """The '## N-way 1-shot' heading above `line`."""
    before = report[:report.index(line)]
    return before[before.rindex("## "):].splitlines()[0]


def test_mixed_episodes_agree_with_metalab_eval(tiny, data_with_lake):
    for method in ("maml", "average"):
        for part in ("val", "test"):
            results = evaluate_checkpoint(tiny[method], shots=1, episodes=EPISODES, seed=0, part=part,
                                          data_dir=data_with_lake, threads=1)
            last = results["after_steps"][max(results["after_steps"])]
            (row,) = rows(tiny, method=method, ways=5, part=part, alphabet="mixed")
            assert row["mean"] == pytest.approx(last["mean"]) and row["ci95"] == pytest.approx(last["ci95"])


def test_within_alphabet_episodes_are_the_same_for_every_model(tiny, data_with_lake):
    data, split = load_split_data("minimal", data_with_lake, download_missing=False)
    tasks = alphabet_tasks(data, split, "test", "Sanskrit", 5, 1, 15)
    for method in ("maml", "average"):
        _, meta, learner_method = image_method(tiny[method], 5, 1, 15, "", threads=1)
        scores = per_episode_scores(meta, learner_method, fixed_episodes(tasks, 0, EPISODES),
                                    learner_method.eval_steps)[-1]
        (row,) = rows(tiny, method=method, ways=5, part="test", alphabet="Sanskrit")
        assert row["mean"] == pytest.approx(scores.mean())


def test_groups_without_episodes_and_models_without_twenty_ways_say_so(tiny):
    (greek,) = rows(tiny, method="average", ways=5, part="val", alphabet="Greek")
    assert greek["note"] == "only 2 characters" and "mean" not in greek
    (maml,) = rows(tiny, method="maml", ways=20, part="test", alphabet="mixed")
    assert maml["note"] == "cannot do 20-way: trained 5-way"
    assert "Greek of meta-validation (2)" in tiny["report"] and "n/a (cannot do 20-way: trained 5-way)" in tiny["report"]
    assert {row["seen"] for row in rows(tiny, part="val")} == {"yes"} and {row["seen"] for row in rows(tiny, part="test")} == {"no"}
    assert {row["seen"] for row in rows(tiny, part="train")} == {"yes"}


def test_the_ladder_holds_each_rung_and_the_drops_between_them(tiny):
    for method, ways in (("maml", 5), ("average", 5), ("average", 20)):
        mixed = {part: rows(tiny, method=method, ways=ways, part=part, alphabet="mixed")[0] for part in PART_NAMES}
        line = next(line for line in tiny["report"].splitlines()
                    if line.startswith(f"| {method} ({method}) | {ways} | "))
        for upper, lower in (("train", "val"), ("val", "test")):
            a, b = mixed[upper], mixed[lower]
            assert estimate_cell(a["mean"], a["ci95"], "accuracy") in line
            drop = f"{100 * (a['mean'] - b['mean']):+.2f} ± {100 * math.hypot(a['ci95'], b['ci95']):.2f}"
            assert drop in line


def test_meta_train_episodes_are_upright_drawings_of_the_training_characters(tiny, data_with_lake):
    data, split = load_split_data("minimal", data_with_lake, download_missing=False)
    _, meta, method = image_method(tiny["average"], 5, 1, 15, "", threads=1)
    tasks = omniglot_tasks(data, split, "train", 5, 1, 15, rotations=(0,))
    scores = per_episode_scores(meta, method, fixed_episodes(tasks, 0, EPISODES), method.eval_steps)[-1]
    (row,) = rows(tiny, method="average", ways=5, part="train", alphabet="mixed")
    assert row["characters"] == len(split.part("train")) and row["mean"] == pytest.approx(scores.mean())


def test_lake_benchmark_table_holds_metalab_eval_s_errors(tiny, data_with_lake, capsys):
    expected = evaluate_lake(tiny["average"], data_dir=data_with_lake, download=False, threads=1, show=False)
    errors = expected["after_steps"][0]["error_percent"]
    lake_rows = rows(tiny, method="average", benchmark="lake")
    assert [row["run"] for row in lake_rows] == ["run01", "run02", "run03"]
    assert [row["error_percent"] for row in lake_rows] == pytest.approx(errors)
    section = tiny["report"][tiny["report"].index("## Lake's"):]
    for run, error in zip(("run01", "run02", "run03"), errors):
        assert f"| {run} | {error:.2f} |" in section
    assert f"| mean | {np.mean(errors):.2f} |" in section
    assert "maml (maml): n/a (cannot do 20-way: trained 5-way)" in section and "people 4.5%" in section


def test_without_the_archive_the_report_says_it_is_absent(tiny, omniglot_dir, tmp_path):
    assert main(["study", "alphabet-shift", "--checkpoints", str(tiny["average"]), "--episodes", "2",
                 "--threads", "1", "--out", str(tmp_path), "--data-dir", str(omniglot_dir)]) == 0
    report = (tmp_path / "report.md").read_text()
    assert f"Not run: all_runs.zip is absent from {omniglot_dir}" in report


def test_checkpoints_of_different_splits_are_refused(tiny, tmp_path, capsys):
    from metalab import checkpoint

    state = checkpoint.load(tiny["average"])
    state["config"]["split"] = "vinyals"
    checkpoint.save(tmp_path / "other.pt", state)
    assert main(["study", "alphabet-shift", "--checkpoints", str(tiny["average"]), str(tmp_path / "other.pt"),
                 "--out", str(tmp_path / "out"), "--threads", "1"]) == 2
    assert "different splits (minimal, vinyals)" in capsys.readouterr().err


def test_adding_a_checkpoint_computes_only_its_cells(tiny, data_with_lake, tmp_path):
    out = tmp_path / "study"
    first = ["study", "alphabet-shift", "--episodes", "2", "--threads", "1", "--out", str(out),
             "--data-dir", str(data_with_lake), "--checkpoints", str(tiny["average"])]
    assert main(first) == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()}
    assert main(first + [str(tiny["maml"])]) == 0
    again = {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()}
    average = [name for name in stamps if name.endswith("average-.json")]
    assert average and all(again[name] == stamps[name] for name in average)  # the average learner's: cached
    assert any(name.endswith("maml-.json") for name in set(again) - set(stamps))


def test_a_replaced_lake_archive_computes_the_lake_cells_again(tiny, data_with_lake, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for archive in data_with_lake.iterdir():
        (folder / archive.name).symlink_to(archive.resolve())
    (folder / "all_runs.zip").unlink()
    (folder / "all_runs.zip").write_bytes((data_with_lake / "all_runs.zip").read_bytes())
    out = tmp_path / "study"
    command = ["study", "alphabet-shift", "--episodes", "2", "--threads", "1", "--out", str(out),
               "--data-dir", str(folder), "--checkpoints", str(tiny["average"])]
    assert main(command) == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()}
    stat = (folder / "all_runs.zip").stat()
    os.utime(folder / "all_runs.zip", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # as a fresh download
    assert main(command) == 0
    again = {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()}
    changed = {name for name in stamps if again[name] != stamps[name]}
    assert changed and changed == {name for name in stamps if name.startswith("lake__")}
