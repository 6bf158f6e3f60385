"""docs/analysis/study_pairs.py: checkpoints of two runs of a study paired cell by cell."""

import json
from pathlib import Path

import pytest
from conftest import analysis_script


def study_pairs():
    return analysis_script("study_pairs")


def write_study(folder: Path, cells: dict[str, dict[str, list[float]]]) -> None:
    (folder / "cells").mkdir(parents=True)
    for key, scores in cells.items():
        (folder / "cells" / f"{key}.json").write_text(
            json.dumps({"key": key, "fingerprint": "x", "result": {"rows": [], "scores": scores}}))


def test_pairs_the_same_cell_of_two_runs(tmp_path, capsys):
    write_study(tmp_path / "a", {"c1": {"A.pt": [1.0, 1.0, 0.0, 1.0], "M.pt": [0.0] * 4},
                                 "c2": {"A.pt": [0.5] * 4, "M.pt": [0.0] * 4}})
    write_study(tmp_path / "b", {"c1": {"B.pt": [0.0, 1.0, 0.0, 0.0]}, "c2": {"B.pt": [0.25] * 4}})
    study_pairs().main(f"A.pt:{tmp_path / 'a'}", f"B.pt:{tmp_path / 'b'}")
    lines = capsys.readouterr().out.splitlines()
    # c1: A - B per episode 1, 0, 0, 1: mean 0.5, std 0.577, interval 1.96 * 0.577 / 2
    assert lines[2] == "| c1 | 75.00 | 25.00 | +50.00 ± 56.58 |"
    assert lines[3] == "| c2 | 50.00 | 25.00 | +25.00 ± 0.00 |"


def test_refuses_a_checkpoint_the_study_did_not_score(tmp_path):
    write_study(tmp_path / "a", {"c1": {"A.pt": [1.0]}})
    with pytest.raises(SystemExit, match="C.pt is not in"):
        study_pairs().main(f"C.pt:{tmp_path / 'a'}", f"A.pt:{tmp_path / 'a'}")


def test_refuses_cells_of_different_episodes(tmp_path):
    write_study(tmp_path / "a", {"c1": {"A.pt": [1.0, 0.0]}})
    write_study(tmp_path / "b", {"c1": {"B.pt": [1.0, 0.0, 1.0]}})
    with pytest.raises(SystemExit, match="not paired"):
        study_pairs().main(f"A.pt:{tmp_path / 'a'}", f"B.pt:{tmp_path / 'b'}")
