"""`metalab study extrapolation-omniglot --train tiny`: trains, evaluates and reports the numbers it computed."""

import csv
import json
import math

import numpy as np
import pytest
import torch
from conftest import run_tiny_study

from metalab.evaluation.stats import paired_difference
from metalab.studies.extrapolation_omniglot import distortions
from metalab.studies.tables import difference_cell, estimate_cell

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_the_tiny_study_reports_every_number_it_computed(tmp_path, omniglot_dir):
    out = tmp_path / "study"
    cells, report = run_tiny_study("extrapolation-omniglot", out, omniglot_dir)
    assert len(cells) == len(distortions("tiny")) == 3
    rows = [row for cell in cells.values() for row in cell["rows"]]
    assert {row["method"] for row in rows} == {"maml", "snail", "metanet"}
    assert all(row["augment"] == 0 for row in rows) and "| no |" in report  # the study trains without --augment
    for cell in cells.values():
        maml = next(np.array(cell["scores"][r["checkpoint"]]) for r in cell["rows"] if r["method"] == "maml")
        for row in cell["rows"]:
            scores = np.array(cell["scores"][row["checkpoint"]])
            assert scores.size == 20 and row["mean"] == pytest.approx(scores.mean())
            assert estimate_cell(row["mean"], row["ci95"], "accuracy") in report
            if row["method"] != "maml":
                assert row["diff_mean"] == pytest.approx(paired_difference(scores, maml).mean)
                assert difference_cell(row["diff_mean"], row["diff_ci95"], "accuracy") in report
    assert {(row["shear"], row["scale"]) for row in rows} == {(0.0, 1.0), (math.pi / 4, 1.0), (0.0, 1 / 3)}
    assert len(list(csv.DictReader((out / "results.csv").open()))) == len(rows)
    for name in ("shear.png", "scale.png", "shear-minus-maml.png", "scale-minus-maml.png"):
        assert (out / name).read_bytes()[:8] == PNG and f"]({name})" in report
    # A rerun takes every cell from the cache: the same numbers, nothing evaluated again.
    before = {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()}
    run_tiny_study("extrapolation-omniglot", out, omniglot_dir)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "cells").iterdir()} == before
    assert json.loads((out / "results.json").read_text())["cells"] == cells


def test_checkpoints_trained_with_augment_get_their_own_panel(tmp_path):
    from metalab.studies.extrapolation_report import write_report

    def row(checkpoint, method, augment, shear, scale, mean):
        return {"checkpoint": checkpoint, "label": f"{method} ({checkpoint})", "method": method, "augment": augment,
                "trained_steps": 10, "eval_steps": 3, "shear": shear, "scale": scale, "mean": mean, "ci95": 0.01,
                "n": 100, **({} if method == "maml" else {"diff_mean": mean - 0.9, "diff_ci95": 0.02})}

    results = {}
    for shear, scale in distortions("tiny"):
        results[f"{shear}-{scale}"] = {"rows": [row("a", "maml", 0.0, shear, scale, 0.9),
                                                row("b", "snail", 0.0, shear, scale, 0.8),
                                                row("c", "maml", 1.0, shear, scale, 0.95)]}
    report = write_report(results, tmp_path)
    assert "| maml (c) | `c` | 10 | 3 | yes (1) |" in report and "| maml (a) | `a` | 10 | 3 | no |" in report
    for name in ("shear.png", "shear-augment.png", "scale.png", "scale-augment.png", "shear-minus-maml.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG and f"]({name})" in report
    assert not (tmp_path / "shear-minus-maml-augment.png").exists()  # nothing but MAML trained with --augment
    assert "| snail (b) | -10.00 ± 2.00 |" in report


def test_the_study_tasks_shrink_every_drawing_alike_and_keep_the_episode(omniglot_dir):
    """distorted_tasks at scale s: the same labels as undistorted at every episode, 15 queries per class, and the
    ink of every image of a task shrunk by about s^2 in area (the resize keeps a drawing's ink mass, up to its
    filter's ringing)."""
    from metalab.data.episode import generator_for
    from metalab.studies.extrapolation_omniglot import distorted_tasks

    plain = distorted_tasks("minimal", 5, 1, 0.0, 1.0, omniglot_dir)
    for scale in (1 / 3, 1 / 2):
        shrunk = distorted_tasks("minimal", 5, 1, 0.0, scale, omniglot_dir)
        for index in range(3):
            a, b = (tasks.sample(generator_for(0, 1, index), 1) for tasks in (plain, shrunk))
            assert b.query_x.shape == (1, 75, 1, 28, 28) and b.support_x.shape == (1, 5, 1, 28, 28)
            assert torch.equal(a.support_y, b.support_y) and torch.equal(a.query_y, b.query_y)
            ratio = b.query_x.sum((2, 3, 4)) / a.query_x.sum((2, 3, 4))  # [1, 75] per image
            assert ratio.mean().item() == pytest.approx(scale**2, rel=0.15)
