"""docs/analysis/validation_curves.py: validation scores of several runs as a table and a plot."""

import json
from pathlib import Path

import pytest
from conftest import analysis_script


def validation_curves():
    return analysis_script("validation_curves")


def write_run(folder: Path, vals: dict[int, float]) -> Path:
    folder.mkdir(parents=True)
    lines = []
    for step in range(10, 1 + max(vals), 10):
        record = {"step": step, "time": 6.0 * step, "cpu_time": 3.0 * step, "loss": 1.0, "score": 0.5}
        if step in vals:
            record["val"] = vals[step]
        lines.append(json.dumps(record))
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_rows_hold_each_validation_and_the_plot_is_written(tmp_path, capsys):
    a = write_run(tmp_path / "a", {20: 0.5, 40: 0.75})
    b = write_run(tmp_path / "b", {30: 0.25})
    validation_curves().main([f"A={a}", f"B={b}", "--x", "time", "--plot", str(tmp_path / "curves.png")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "| A | 2.0 min: 0.500, 4.0 min: 0.750 |"
    assert lines[3] == "| B | 3.0 min: 0.250 |"
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_steps_by_default(tmp_path, capsys):
    validation_curves().main([f"A={write_run(tmp_path / 'a', {20: 0.5})}"])
    assert capsys.readouterr().out.splitlines()[2] == "| A | 20: 0.500 |"


@pytest.mark.parametrize("spec", ["no-equals-sign", "A=missing-folder"])
def test_bad_runs_are_refused_in_one_line(tmp_path, spec):
    with pytest.raises(SystemExit) as stop:
        validation_curves().main([spec.replace("missing-folder", str(tmp_path / "missing"))])
    assert "\n" not in str(stop.value) and str(stop.value)
