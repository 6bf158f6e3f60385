"""`metalab table`: methods against shots from saved per-episode scores."""

import numpy as np
import pytest

from metalab.cli.main import main


def test_table_of_methods_against_shots_with_paired_differences(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for k in (1, 5):
        a = rng.integers(0, 2, size=(1, 200)).astype(float)
        np.save(tmp_path / f"a-{k}.npy", a)
        np.save(tmp_path / f"b-{k}.npy", np.concatenate([np.zeros((1, 200)), a * 0.5]))  # last row is scored
    out = tmp_path / "table" / "shots"
    assert main(["table", "--shots", "1,5", "--method", f"A={tmp_path}/a-{{shots}}.npy",
                 "--method", f"B={tmp_path}/b-{{shots}}.npy", "--against", "A", "--out", str(out)]) == 0
    text = (out.with_suffix(".md")).read_text()
    a1 = np.load(tmp_path / "a-1.npy")[-1]
    assert f"| A | {100 * a1.mean():.2f} ± " in text
    diff = 0.5 * a1 - a1
    assert f"| B - A | {100 * diff.mean():.2f} ± {100 * 1.96 * diff.std(ddof=1) / np.sqrt(200):.2f}" in text
    assert out.with_suffix(".png").stat().st_size > 0


@pytest.mark.parametrize("argv,message", [
    (["--method", "A=missing-{shots}.npy"], "does not exist"),
    (["--method", "A=no-pattern.npy"], "with {shots} in the pattern"),
    (["--method", "A=x-{shots}.npy", "--against", "B"], "is not one of the methods"),
])
def test_table_input_errors_are_clear(argv, message, tmp_path, capsys):
    assert main(["table", "--shots", "1", "--out", str(tmp_path / "t"), *argv]) == 2
    assert message in capsys.readouterr().err
