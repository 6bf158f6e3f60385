"""Reliability: one run per folder, nothing non-finite saved, safe checkpoint loading, one-line errors.

One test (or a parametrized family) per defect of issue 17, numbered as there. The kills of real processes,
the full disk and the fuzzing of the command line are in tests/test_faults.py and tests/test_fuzz_cli.py.
"""

import contextlib
import dataclasses
import errno
import io
import json
import os
import pickle

import filelock
import numpy as np
import pytest
import torch

from metalab import checkpoint
from metalab.cli.main import main
from metalab.config import Config, preset
from metalab.errors import MetalabError
from metalab.evaluation.stats import Estimate
from metalab.training import loop

SINUSOID = preset("sinusoid-maml").replace(steps=6, val_every=3, checkpoint_every=3, log_every=1, val_episodes=4,
                                           meta_batch_size=2, hidden=8, threads=1)
ROOT = os.geteuid() == 0  # root writes into read-only folders: those cases cannot be staged


def cli(*argv) -> tuple[int, list[str]]:
    """Run `metalab ARGV` in this process: (exit code, the lines it wrote to stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as stop:
            code = stop.code
    return code, [line for line in err.getvalue().splitlines() if line.strip()]


def one_line_error(code_and_lines, *fragments) -> str:
    code, lines = code_and_lines
    assert code == 2 and len(lines) == 1, (code, lines)
    assert lines[0].startswith("metalab"), lines
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def train_args(out, *extra):
    return ["train", "--preset", "sinusoid-maml", "--steps", "6", "--val-every", "3", "--checkpoint-every", "3",
            "--log-every", "1", "--val-episodes", "4", "--meta-batch-size", "2", "--hidden", "8", "--threads", "1",
            "--out-dir", out, *extra]


def strict_records(path) -> list[dict]:
    """metrics.jsonl parsed as strict JSON (NaN and Infinity are not JSON)."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def all_finite(state) -> bool:
    if isinstance(state, torch.Tensor):
        return not state.is_floating_point() or bool(torch.isfinite(state).all())
    if isinstance(state, dict):
        return all(all_finite(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return all(all_finite(v) for v in state)
    if isinstance(state, float):
        return np.isfinite(state)
    return True


# 1 ------------------------------------------------------------------------------------------------------------

def test_1_a_second_writer_on_a_run_folder_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with filelock.FileLock(str(out / ".metalab.lock"), timeout=0):  # another process's lock, as it holds it
        one_line_error(cli(*train_args(out)), "another metalab process", str(out))
    assert sorted(p.name for p in out.iterdir()) == [".metalab.lock"]  # nothing written
    assert cli(*train_args(out))[0] == 0  # once the lock is free


# 2 ------------------------------------------------------------------------------------------------------------

def test_2_nonfinite_parameters_never_reach_a_checkpoint(tmp_path):
    config = SINUSOID.replace(inner_lr=3e5, meta_lr=1e3, checkpoint_every=1, val_every=1, steps=20)
    with pytest.raises(MetalabError) as raised:
        loop.train(config, tmp_path)
    message = str(raised.value)
    assert "\n" not in message and "at step" in message and "last good checkpoint" in message
    for name in ("last.pt", "best.pt"):
        if (tmp_path / name).exists():
            assert all_finite(checkpoint.load(tmp_path / name)), name
            assert f"step {checkpoint.load(tmp_path / 'last.pt')['step']}" in message


def test_2_checkpoint_save_refuses_nonfinite_values(tmp_path):
    with pytest.raises(MetalabError, match=r"meta\.theta\.w"):
        checkpoint.save(tmp_path / "c.pt", {"meta": {"theta": {"w": torch.tensor([1.0, float("nan")])}}})
    assert list(tmp_path.iterdir()) == []


def test_2_a_nonfinite_validation_score_stops_the_run(tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "evaluate", lambda meta, method, episodes, steps, *rest: {
        s: Estimate(float("inf"), float("nan"), 4) for s in steps})
    with pytest.raises(MetalabError, match="validation MSE .* at step 3.*last good checkpoint: none"):
        loop.train(SINUSOID, tmp_path)
    assert not (tmp_path / "best.pt").exists()


def test_2_a_nonfinite_gradient_stops_the_run(tmp_path, monkeypatch):
    from metalab.methods.optimization import GradientMethod

    real = GradientMethod.meta_loss

    def nan_gradient_at_step_4(self, meta, episode, step):
        loss, score = real(self, meta, episode, step)
        if step == 4:  # a finite loss (sqrt(0) = 0) whose gradient is not (d sqrt(u) / du at 0 is inf, times 0)
            p = next(iter(meta["theta"].values()))
            loss = loss + torch.sqrt((p - p.detach()).pow(2).sum())
        return loss, score

    monkeypatch.setattr(GradientMethod, "meta_loss", nan_gradient_at_step_4)
    with pytest.raises(MetalabError, match=r"gradient .* at step 5.*last\.pt \(step 3\)"):
        loop.train(SINUSOID, tmp_path)
    assert checkpoint.load(tmp_path / "last.pt")["step"] == 3


def test_2_a_run_that_never_beat_chance_says_so(tmp_path, omniglot_dir, capsys, monkeypatch):
    monkeypatch.setattr(loop, "evaluate", lambda meta, method, episodes, steps, *rest: {
        s: Estimate(0.205, 0.01, 4) for s in steps})
    config = preset("omniglot-demo").replace(steps=2, val_every=1, val_episodes=2, meta_batch_size=2, hidden=4,
                                             threads=1)
    loop.train(config, tmp_path / "a", data_dir=omniglot_dir)
    assert "never beat chance (0.2" in capsys.readouterr().out
    monkeypatch.setattr(loop, "evaluate", lambda meta, method, episodes, steps, *rest: {
        s: Estimate(0.6, 0.01, 4) for s in steps})
    loop.train(config, tmp_path / "b", data_dir=omniglot_dir)
    assert "chance" not in capsys.readouterr().out


# 3 ------------------------------------------------------------------------------------------------------------

class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # creates a file when unpickled: code run by loading


def test_3_loading_a_checkpoint_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"config": {}, "meta": Payload(str(marker))}, f)
    one_line_error(cli("eval", tmp_path / "evil.pt"), "evil.pt")
    assert not marker.exists()
    torch.save({"config": {}, "meta": Payload(str(marker))}, tmp_path / "evil2.pt")
    marker.unlink(missing_ok=True)
    one_line_error(cli("eval", tmp_path / "evil2.pt"), "evil2.pt")
    assert not marker.exists()


@pytest.mark.parametrize("content", [
    {"a": 1}, [1, 2], {"config": 3, "meta": {}}, {"config": {}, "meta": {"theta": 5}},
    {"config": {"nope": 1}, "meta": {"theta": {}}}, {"config": {"ways": "five"}, "meta": {"theta": {}}},
])
def test_3_a_pickle_that_is_not_a_metalab_checkpoint_is_a_one_line_error(tmp_path, content):
    torch.save(content, tmp_path / "x.pt")
    one_line_error(cli("eval", tmp_path / "x.pt"), "x.pt")
    one_line_error(cli("finetune", "--init", f"maml:{tmp_path / 'x.pt'}"), "x.pt")


def test_3_every_checkpoint_metalab_writes_loads_with_weights_only(tmp_path):
    from metalab.config import PRETRAIN_PRESETS
    from metalab.training.pretrain import pretrain

    loop.train(SINUSOID, tmp_path / "run")
    pretrain(PRETRAIN_PRESETS["sinusoid"].replace(max_epochs=1, steps_per_epoch=2, val_episodes=2, threads=1),
             tmp_path / "pre")
    for path in (tmp_path / "run" / "last.pt", tmp_path / "run" / "best.pt", tmp_path / "pre" / "pretrained.pt"):
        torch.load(path, weights_only=True)


def test_3_resume_with_wrong_shaped_tensors_names_the_field(tmp_path):
    loop.train(SINUSOID, tmp_path)
    state = checkpoint.load(tmp_path / "last.pt")
    name = next(iter(state["meta"]["theta"]))
    state["meta"]["theta"][name] = state["meta"]["theta"][name][:1]
    torch.save(state, tmp_path / "last.pt")
    with pytest.raises(MetalabError, match=rf"meta\.theta\.{name}.*shape"):
        loop.train(SINUSOID, tmp_path, resume=True)
    state = checkpoint.load(tmp_path / "last.pt")
    del state["optimizer"]
    torch.save(state, tmp_path / "last.pt")
    with pytest.raises(MetalabError, match="optimizer"):
        loop.train(SINUSOID, tmp_path, resume=True)


# 4 ------------------------------------------------------------------------------------------------------------

def test_4_training_into_a_folder_with_a_run_is_refused(tmp_path):
    out = tmp_path / "run"
    assert cli(*train_args(out))[0] == 0
    before = (out / "last.pt").read_bytes()
    one_line_error(cli(*train_args(out, "--seed", "1")), "--resume", "--overwrite")
    assert (out / "last.pt").read_bytes() == before
    assert cli(*train_args(out, "--seed", "1", "--overwrite"))[0] == 0
    assert (out / "last.pt").read_bytes() != before
    assert checkpoint.load(out / "last.pt")["config"]["seed"] == 1


# 5 ------------------------------------------------------------------------------------------------------------

def test_5_resume_before_the_first_checkpoint_starts_a_fresh_log(tmp_path):
    loop.train(SINUSOID, tmp_path / "straight")
    out = tmp_path / "run"
    loop.train(SINUSOID, out)
    (out / "last.pt").unlink()  # killed before its first last.pt: the log already holds records
    loop.train(SINUSOID, out, resume=True)
    steps = [r["step"] for r in strict_records(out / "metrics.jsonl")]
    assert steps == [r["step"] for r in strict_records(tmp_path / "straight" / "metrics.jsonl")]
    assert steps == sorted(set(steps))


def crash_at(monkeypatch, crash_step):
    """Make meta-step `crash_step` (1-based, as logged) raise, as a kill would stop it."""
    from metalab.methods.optimization import GradientMethod

    real = GradientMethod.meta_loss

    def crashing(self, meta, episode, step):
        if step + 1 == crash_step:
            raise KeyboardInterrupt("simulated kill")
        return real(self, meta, episode, step)

    monkeypatch.setattr(GradientMethod, "meta_loss", crashing)


def test_5_resume_tolerates_a_torn_last_log_line(tmp_path, monkeypatch):
    config = SINUSOID.replace(steps=9, checkpoint_every=6)
    loop.train(config, tmp_path / "straight")
    out = tmp_path / "run"
    crash_at(monkeypatch, 8)
    with pytest.raises(KeyboardInterrupt):
        loop.train(config, out)
    monkeypatch.undo()
    log = out / "metrics.jsonl"
    log.write_text(log.read_text() + '{"step": 8, "time": 1.')  # killed mid-write
    loop.train(config, out, resume=True)
    steps = [r["step"] for r in strict_records(log)]
    assert steps == list(range(1, 10))
    drop = ("time", "cpu_time")
    assert [{k: v for k, v in r.items() if k not in drop} for r in strict_records(log)] == [
        {k: v for k, v in r.items() if k not in drop} for r in strict_records(tmp_path / "straight" / "metrics.jsonl")]


# 6 ------------------------------------------------------------------------------------------------------------

def test_6_a_failed_flush_of_the_metrics_log_is_a_one_line_error(tmp_path, monkeypatch):
    from metalab.training import metrics_log

    real = metrics_log.MetricsLog._write

    def fill_disk_at_step_4(self, text):
        if json.loads(text)["step"] == 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, text)

    monkeypatch.setattr(metrics_log.MetricsLog, "_write", fill_disk_at_step_4)
    with pytest.raises(MetalabError, match="no space left.*metrics.jsonl"):
        loop.train(SINUSOID, tmp_path)
    assert [r["step"] for r in strict_records(tmp_path / "metrics.jsonl")] == [1, 2, 3]


def test_6_a_partial_write_of_a_checkpoint_is_a_disk_full_error(tmp_path):
    """RLIMIT_FSIZE makes the write stop part-way, as a filling disk does (torch then said `unexpected pos`)."""
    import subprocess
    import sys

    script = ("import resource, torch, sys\n"
              "from metalab import checkpoint\n"
              "from metalab.errors import MetalabError\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (20000, 20000))\n"
              "try:\n"
              f"    checkpoint.save({str(tmp_path / 'c.pt')!r}, {{'theta': torch.zeros(100_000)}})\n"
              "except MetalabError as e:\n"
              "    print('MetalabError', e)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.stdout.startswith("MetalabError") and "c.pt" in result.stdout, result.stdout + result.stderr
    assert list(tmp_path.iterdir()) == []


# 7 ------------------------------------------------------------------------------------------------------------

def test_7_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    stale = [out / f".last.pt.{pid}.abc.tmp", out / f".best.pt.{pid}.x1.tmp", out / f".curves.png.{pid}.q.tmp",
             out / ".last.pt.k2j3h.tmp"]  # the last: the naming of older versions, which held no pid
    alive = out / f".best.pt.{os.getpid()}.zz.tmp"  # this process is alive: its file is not touched
    for path in stale + [alive]:
        path.write_bytes(b"partial")
    loop.train(SINUSOID, out)
    assert not any(path.exists() for path in stale)
    assert alive.exists()


# 8 ------------------------------------------------------------------------------------------------------------

def test_8_the_metrics_log_is_strict_json(tmp_path):
    loop.train(SINUSOID.replace(grad_clip=0.0), tmp_path)  # no clipping: no gradient norm measured before
    records = strict_records(tmp_path / "metrics.jsonl")
    assert records and all("grad_norm" in r for r in records)


# 9 ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["out-dir is a file", "out-dir under a file", "read-only out-dir"])
def test_9_an_unwritable_out_dir_is_a_one_line_error(tmp_path, case):
    if case == "read-only out-dir" and ROOT:
        pytest.skip("root writes into read-only folders")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = {"out-dir is a file": blocker, "out-dir under a file": blocker / "run",
           "read-only out-dir": tmp_path / "ro"}[case]
    if case == "read-only out-dir":
        out.mkdir(mode=0o555)
    one_line_error(cli(*train_args(out)), "--out-dir")


@pytest.mark.parametrize("case", ["cache is a file", "read-only cache"])
def test_9_an_unwritable_cache_is_a_one_line_error(tmp_path, omniglot_dir, monkeypatch, case):
    if case == "read-only cache" and ROOT:
        pytest.skip("root writes into read-only folders")
    cache = tmp_path / "cache"
    if case == "cache is a file":
        cache.write_text("x")
    else:
        cache.mkdir(mode=0o555)
    monkeypatch.setenv("METALAB_CACHE", str(cache))
    one_line_error(cli("train", "--preset", "omniglot-demo", "--data-dir", omniglot_dir, "--out-dir",
                       tmp_path / "run", "--threads", "1"), "METALAB_CACHE")


def test_9_pretrain_out_that_is_a_file_is_a_one_line_error(tmp_path):
    (tmp_path / "f").write_text("x")
    one_line_error(cli("pretrain", "--problem", "sinusoid", "--out", tmp_path / "f", "--max-epochs", "1"), "--out")


@pytest.mark.parametrize("flag", ["--save-scores", "--json"])
def test_9_eval_output_paths_are_checked_before_the_work(tmp_path, flag, monkeypatch):
    loop.train(SINUSOID.replace(steps=3), tmp_path / "run")
    (tmp_path / "f").write_text("x")
    from metalab.evaluation import checkpoints

    monkeypatch.setattr(checkpoints, "gathered_scores", lambda *a, **k: pytest.fail("evaluated first"))
    one_line_error(cli("eval", tmp_path / "run" / "best.pt", flag, tmp_path / "f" / "out"), flag)
    monkeypatch.undo()
    target = tmp_path / "missing" / "folder" / "out.x"  # a missing folder is made
    assert cli("eval", tmp_path / "run" / "best.pt", "--episodes", "3", flag, target)[0] == 0
    assert target.parent.is_dir() and [p.name for p in target.parent.iterdir() if not p.name.startswith(".")]


# 10 -----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv,fragment", [
    (["train", "--preset", "sinusoid-maml", "--seed", "-1"], "--seed"),
    (["train", "--preset", "sinusoid-maml", "--seed", str(2**64)], "--seed"),
    (["train", "--preset", "sinusoid-maml", "--meta-lr", "nan"], "--meta-lr"),
    (["train", "--preset", "sinusoid-maml", "--grad-clip", "nan"], "--grad-clip"),
    (["train", "--preset", "sinusoid-maml", "--grad-clip", "-1"], "--grad-clip"),
    (["train", "--preset", "sinusoid-maml", "--inner-lr", "nan"], "--inner-lr"),
    (["train", "--preset", "sinusoid-maml", "--inner-lr", "inf"], "--inner-lr"),
    (["train", "--preset", "sinusoid-maml", "--steps", "x"], "--steps"),
    (["eval", "x.pt", "--episodes", "0"], "--episodes"),
    (["eval", "x.pt", "--episodes", "-5"], "--episodes"),
    (["eval", "x.pt", "--steps", "-1"], "--steps"),
    (["eval", "x.pt", "--queries", "0"], "--queries"),
    (["eval", "x.pt", "--inner-lr", "nan"], "--inner-lr"),
    (["eval", "x.pt", "--seed", "-3"], "--seed"),
    (["table", "--shots", "1,x", "--method", "A=a{shots}.npy", "--out", "t"], "--shots"),
    (["table", "--shots", "0", "--method", "A=a{shots}.npy", "--out", "t"], "--shots"),
    (["finetune", "--init", "random", "--problem", "sinusoid", "--head-lr", "nan"], "--head-lr"),
])
def test_10_bad_numbers_are_one_line_errors_before_any_work(tmp_path, argv, fragment, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_line_error(cli(*argv), fragment)
    assert list(tmp_path.iterdir()) == []


# 11 -----------------------------------------------------------------------------------------------------------

def _score_file(tmp_path, kind):
    path = tmp_path / f"{kind}.npy"
    good = np.random.default_rng(0).random((4, 10))
    if kind == "missing":
        return path
    if kind == "truncated":
        np.save(path, good)
        path.write_bytes(path.read_bytes()[:100])
    elif kind == "garbage":
        path.write_bytes(b"\x00garbage" * 20)
    elif kind == "object":
        np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    elif kind == "0-d":
        np.save(path, np.float64(0.5))
    elif kind == "nan":
        good[-1, 3] = np.nan
        np.save(path, good)
    elif kind == "empty":
        np.save(path, np.zeros((0,)))
    elif kind == "3-d":
        np.save(path, np.zeros((2, 2, 2)))
    elif kind == "strings":
        np.save(path, np.array(["a", "b"]))
    return path


@pytest.mark.parametrize("kind", ["missing", "truncated", "garbage", "object", "0-d", "nan", "empty", "3-d",
                                  "strings"])
def test_11_compare_refuses_a_bad_score_file_in_one_line(tmp_path, kind):
    good = tmp_path / "good.npy"
    np.save(good, np.random.default_rng(1).random((4, 10)))
    bad = _score_file(tmp_path, kind)
    one_line_error(cli("compare", good, bad), bad.name)
    one_line_error(cli("compare", bad, good), bad.name)


def test_11_compare_checks_the_rows_and_reads_a_1d_file_as_one_row(tmp_path, capsys):
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    rng = np.random.default_rng(0)
    np.save(a, rng.random((4, 10)))
    np.save(b, rng.random(10))
    one_line_error(cli("compare", a, b, "--step-a", "99"), "--step-a", "4 rows")
    one_line_error(cli("compare", a, b, "--step-b", "1"), "--step-b")
    assert main(["compare", str(a), str(b)]) == 0
    assert "paired over 10 episodes" in capsys.readouterr().out


# 12 -----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["wrong shapes", "too few images", "directory"])
def test_12_a_cache_that_is_valid_npz_but_wrong_is_rebuilt(tmp_path, omniglot_dir, monkeypatch, damage):
    from metalab.data import omniglot
    from metalab.data.download import file_digests

    monkeypatch.setenv("METALAB_CACHE", str(tmp_path / "cache"))
    archive = omniglot_dir / "images_background_small1.zip"
    sha = file_digests(archive)[1]
    reference = omniglot._load_archive("images_background_small1", archive, sha, omniglot.Preprocessing())
    (cache,) = (tmp_path / "cache").glob("*.npz")
    cache.unlink()
    if damage == "wrong shapes":
        np.savez(cache, images=np.zeros((3, 5), np.uint8), character=np.array(["a/character01"] * 3),
                 drawer=np.zeros(3, np.int16))
    elif damage == "too few images":
        np.savez(cache, **{k: v[:10] for k, v in reference.items()})
    else:
        cache.mkdir()
    got = omniglot._load_archive("images_background_small1", archive, sha, omniglot.Preprocessing())
    for key in reference:
        assert np.array_equal(got[key], reference[key])
    assert cache.is_file()


# 13 -----------------------------------------------------------------------------------------------------------

def test_13_resume_ignores_what_does_not_change_the_results(tmp_path, monkeypatch):
    first = tmp_path / "run"
    crash_at(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        loop.train(SINUSOID.replace(out_dir=str(first)), first)
    monkeypatch.undo()
    moved = tmp_path / "moved"
    first.rename(moved)
    loop.train(SINUSOID.replace(threads=2, out_dir=str(moved) + "/", log_every=2), moved, resume=True)
    assert checkpoint.load(moved / "last.pt")["step"] == 6


def test_13_a_refused_resume_names_each_differing_field_with_both_values(tmp_path):
    loop.train(SINUSOID, tmp_path)
    with pytest.raises(MetalabError) as raised:
        loop.train(SINUSOID.replace(meta_lr=0.5, seed=4), tmp_path, resume=True)
    message = str(raised.value)
    assert "--meta-lr 0.001 (checkpoint) vs 0.5" in message and "--seed 0 (checkpoint) vs 4" in message


def test_config_fields_have_their_types():
    for field in dataclasses.fields(Config):
        wrong = "text" if field.type in (int, float, bool) else 3
        with pytest.raises(MetalabError, match=f"--{field.name.replace('_', '-')}"):
            Config(**{field.name: wrong})
