"""The study framework: cells cached and resumed, never half-written, the report files, the command line."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from metalab.cli.main import main
from metalab.errors import MetalabError
from metalab.studies import registry
from metalab.studies.figures import Series, curves_with_bands
from metalab.studies.study import Cell, StudySettings, run_study
from metalab.studies.tables import estimate_row, markdown_table


class CountingStudy:
    """Three cells of known scores; counts how often each is computed."""

    name = "counting"
    summary = "a toy study for the tests"

    def __init__(self, fail_at: str | None = None):
        self.computed: list[str] = []
        self.fail_at = fail_at

    def train(self, budget, out, threads, data_dir=None):
        return []

    def cells(self, checkpoints, settings):
        return [Cell(f"x={x}", lambda x=x: self._compute(x, settings)) for x in (1, 2, 3)]

    def _compute(self, x, settings):
        key = f"x={x}"
        if key == self.fail_at:
            raise KeyboardInterrupt  # as a user's Ctrl-C in the middle of a cell
        self.computed.append(key)
        scores = np.random.default_rng([settings.seed, x]).normal(x, 0.1, settings.episodes)
        return {"rows": [{"x": x, **estimate_row(scores)}], "scores": scores.tolist()}

    def report(self, results, out):
        rows = [r for result in results.values() for r in result["rows"]]
        curves_with_bands([Series("toy", [r["x"] for r in rows], [r["mean"] for r in rows],
                                  [r["ci95"] for r in rows])], out / "toy.png", "x (units)", "score", "toy")
        return markdown_table(["x", "mean"], [[r["x"], f"{r['mean']:.6f}"] for r in rows])


SETTINGS = StudySettings(episodes=30, seed=3, budget="tiny")


def test_a_rerun_computes_no_cell_twice_and_resumes_after_an_interruption(tmp_path):
    interrupted = CountingStudy(fail_at="x=2")
    with pytest.raises(KeyboardInterrupt):
        run_study(interrupted, [], tmp_path, SETTINGS)
    assert interrupted.computed == ["x=1"]
    assert sorted(p.name for p in (tmp_path / "cells").iterdir()) == ["x=1.json"]
    resumed = CountingStudy()
    run_study(resumed, [], tmp_path, SETTINGS)
    assert resumed.computed == ["x=2", "x=3"]  # x=1 came from the cache
    again = CountingStudy()
    run_study(again, [], tmp_path, SETTINGS)
    assert again.computed == []
    other_episodes = CountingStudy()  # cached cells of other settings are not this study's results
    run_study(other_episodes, [], tmp_path, StudySettings(episodes=31, seed=3, budget="tiny"))
    assert other_episodes.computed == ["x=1", "x=2", "x=3"]


def test_the_report_files_hold_the_computed_numbers(tmp_path):
    study = CountingStudy()
    report = run_study(study, [], tmp_path, SETTINGS)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["study"] == "counting" and results["settings"]["episodes"] == 30
    text = report.read_text()
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [row["cell"] for row in rows] == ["x=1", "x=2", "x=3"]
    for x, row in zip((1, 2, 3), rows):
        scores = np.random.default_rng([3, x]).normal(x, 0.1, 30)
        assert results["cells"][f"x={x}"]["scores"] == pytest.approx(scores.tolist())
        assert float(row["mean"]) == pytest.approx(scores.mean())
        assert f"{scores.mean():.6f}" in text
    assert (tmp_path / "toy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "30 episodes per cell (seed 3)" in text


class DivergedStudy(CountingStudy):
    """One cell whose mean diverged: its scores hold an infinity."""

    def cells(self, checkpoints, settings):
        return [Cell("diverged", lambda: {"rows": [{"x": 1, "mean": float("inf")}], "scores": [1.0, float("nan")]})]

    def report(self, results, out):
        assert results["diverged"]["rows"][0]["mean"] == float("inf")  # the report still sees the infinity
        return "diverged"


def test_results_json_is_standard_json_with_a_diverged_mean_written_null(tmp_path):
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    for run in range(2):  # computed, then read back from the cell cache
        run_study(DivergedStudy(), [], tmp_path, SETTINGS)
        results = json.loads((tmp_path / "results.json").read_text(), parse_constant=refuse)
        assert results["cells"]["diverged"] == {"rows": [{"x": 1, "mean": None}], "scores": [1.0, None]}


def test_a_damaged_cached_cell_is_computed_again(tmp_path):
    run_study(CountingStudy(), [], tmp_path, SETTINGS)
    (tmp_path / "cells" / "x=2.json").write_text('{"key": "x=2", "fingerp')
    study = CountingStudy()
    run_study(study, [], tmp_path, SETTINGS)
    assert study.computed == ["x=2"]


SLOW_CHILD = """
import sys, time
from pathlib import Path
from metalab.studies.study import Cell, StudySettings, run_study

class Slow:
    name = "slow"
    def cells(self, checkpoints, settings):
        return [Cell(f"c{i}", lambda i=i: (time.sleep(0.05 if i == 0 else 60), {"rows": [{"i": i}]})[1])
                for i in range(3)]
    def report(self, results, out):
        return ""

run_study(Slow(), [], Path(sys.argv[1]), StudySettings(episodes=1, budget="tiny"))
"""


def test_a_killed_run_leaves_whole_cells_or_none(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", SLOW_CHILD, str(tmp_path)], stderr=subprocess.DEVNULL)
    first = tmp_path / "cells" / "c0.json"
    deadline = time.monotonic() + 60
    while not first.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)  # while it computes the second cell
    child.wait()
    files = sorted(p.name for p in (tmp_path / "cells").iterdir())
    assert files == ["c0.json"]
    assert json.loads(first.read_text())["result"] == {"rows": [{"i": 0}]}
    assert not (tmp_path / "report.md").exists()


def test_a_write_that_fails_part_way_leaves_no_file(tmp_path, monkeypatch):
    import builtins

    real_open = builtins.open

    class BreaksMidWrite:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, text):
            self.f.write(text[: len(text) // 2])
            raise OSError(5, "Input/output error")

    def open_breaking_cells(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        return BreaksMidWrite(f) if "w" in mode and ".x=1.json" in str(path) else f

    monkeypatch.setattr(builtins, "open", open_breaking_cells)
    with pytest.raises(OSError):
        run_study(CountingStudy(), [], tmp_path, SETTINGS)
    assert list((tmp_path / "cells").iterdir()) == []


def test_cell_keys_must_be_unique_and_file_name_safe(tmp_path):
    class BadKeys(CountingStudy):
        def cells(self, checkpoints, settings):
            return [Cell("a/b", dict)]

    with pytest.raises(ValueError, match="file-name safe"):
        run_study(BadKeys(), [], tmp_path, SETTINGS)


def test_settings_refuse_an_unknown_budget():
    with pytest.raises(MetalabError, match="budget"):
        StudySettings(budget="huge")


@pytest.mark.parametrize("argv, message", [
    (["study", "no-such-study", "--train", "tiny"], "unknown study 'no-such-study'"),
    (["study", "counting"], "needs --checkpoints"),
    (["study"], "name a study"),
    (["study", "counting", "--checkpoints", "missing/best.pt"], "no checkpoint at missing/best.pt"),
    (["study", "counting", "--train", "tiny", "--episodes", "0"], "--episodes must be a positive"),
])
def test_bad_command_lines_are_one_line_and_exit_2(argv, message, capsys, monkeypatch):
    monkeypatch.setitem(registry.STUDIES, "counting", CountingStudy())
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_checkpoints_and_train_are_exclusive(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["study", "counting", "--train", "tiny", "--checkpoints", "a.pt"])
    assert exit_.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_the_command_lists_and_runs_a_study(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(registry.STUDIES, "counting", CountingStudy())
    assert main(["study", "--list"]) == 0
    assert "counting: a toy study for the tests" in capsys.readouterr().out
    assert main(["study", "counting", "--train", "tiny", "--out", str(tmp_path)]) == 0
    assert "| 3 | 2.9" in (tmp_path / "report.md").read_text()  # about 3, from the scores of seed 0
    assert json.loads((tmp_path / "results.json").read_text())["settings"]["episodes"] == 20  # tiny's default
    assert Path(tmp_path / "results.csv").is_file()


class PerCheckpointStudy(CountingStudy):
    """One cell per checkpoint file, reading only that file."""

    def cells(self, checkpoints, settings):
        return [Cell(f"c-{path.stem}", lambda path=path: self._computed(path), inputs=(path,)) for path in checkpoints]

    def _computed(self, path):
        self.computed.append(path.stem)
        return {"rows": [{"size": path.stat().st_size}]}

    def report(self, results, out):
        return ""


def test_a_cell_that_names_its_inputs_is_recomputed_only_when_they_change(tmp_path):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    a.write_bytes(b"1"), b.write_bytes(b"22")
    first = PerCheckpointStudy()
    run_study(first, [a], tmp_path / "out", SETTINGS)
    added = PerCheckpointStudy()
    run_study(added, [a, b], tmp_path / "out", SETTINGS)
    assert first.computed == ["a"] and added.computed == ["b"]
    a.write_bytes(b"333")  # retrained: its cell is stale
    changed = PerCheckpointStudy()
    run_study(changed, [a, b], tmp_path / "out", SETTINGS)
    assert changed.computed == ["a"]
    assert json.loads((tmp_path / "out" / "results.json").read_text())["cells"]["c-a"]["rows"] == [{"size": 3}]


def test_a_second_process_writing_into_the_same_folder_is_refused(tmp_path):
    from metalab.training.run_folder import claimed

    with claimed(tmp_path, "--out"):  # as if another study were running there
        child = subprocess.run([sys.executable, "-m", "metalab", "study", "extrapolation-omniglot", "--checkpoints",
                                __file__, "--out", str(tmp_path)], capture_output=True, text=True)
    assert child.returncode == 2
    assert "another metalab process is writing into" in child.stderr and child.stderr.count("\n") == 1
