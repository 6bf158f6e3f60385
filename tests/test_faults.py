"""Fault injection on real `metalab train` processes: SIGKILL at chosen and at random moments, two writers on one
run folder, a full disk (a file-size limit, RLIMIT_FSIZE, in the child). What must survive: a resumed run equals
the uninterrupted one bit for bit (parameters, Adam's moments, RNG, best.pt, the log), no temporary
file outlives its writer, and every refusal is one line on stderr with exit 2.

The children run tests/fault_child.py, which installs the fault named by $METALAB_FAULT and then runs `metalab`.
"""

import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_reliability import strict_records

from metalab import checkpoint

CHILD = Path(__file__).with_name("fault_child.py")
SINUSOID = ["train", "--preset", "sinusoid-maml", "--steps", "12", "--val-every", "4", "--checkpoint-every", "3",
            "--log-every", "1", "--val-episodes", "4", "--meta-batch-size", "2", "--hidden", "8", "--threads", "1"]
TIMEOUT_S = 300


def child(argv, fault: str = "", file_size_limit: int | None = None, env: dict | None = None, wait: bool = True):
    """A `metalab ARGV` process with an optional fault and file-size limit; its CompletedProcess (or Popen)."""
    environment = {**os.environ, "METALAB_FAULT": fault, **(env or {})}

    def limit():
        if file_size_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    command = [sys.executable, str(CHILD), *map(str, argv)]
    if not wait:
        return subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=TIMEOUT_S,
                          preexec_fn=limit)


def refused_in_one_line(result, *fragments) -> str:
    """Exit 2, no traceback, and exactly one error line (the progress bar may precede it), naming `fragments`."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("metalab: error: "), errors
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


def same(a, b, where: str = "") -> None:
    """Equal nested checkpoint contents: tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (where, sorted(a), sorted(b))
        for key in a:
            same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def assert_same_run(expected: Path, got: Path) -> None:
    for name in ("last.pt", "best.pt"):
        a, b = checkpoint.load(expected / name), checkpoint.load(got / name)
        for state in (a, b):
            state["config"].pop("out_dir")  # the folder's own name
        same(a, b, name)
        assert b["optimizer"]["state"], "Adam's moments are compared too"

    def without_clocks(path):
        return [{k: v for k, v in r.items() if k not in ("time", "cpu_time")} for r in strict_records(path)]

    assert without_clocks(got / "metrics.jsonl") == without_clocks(expected / "metrics.jsonl")
    assert (got / "curves.png").stat().st_size > 0
    assert not list(got.glob(".*.tmp")), "a temporary file outlived its writer"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    result = child([*SINUSOID, "--out-dir", out])
    assert result.returncode == 0, result.stderr[-2000:]
    return out


# 12 steps; checkpoints: last.pt at 3, 6, 9, 12 and best.pt at 4 (and 8, 12 if better); validation at 4, 8, 12.
KILLS = ["meta-step:8", "checkpoint-half:2", "checkpoint-before-rename:3", "checkpoint-after-rename:3",
         "validation:2", "log-half:5"]


@pytest.mark.parametrize("fault", KILLS)
def test_a_run_killed_then_resumed_equals_the_uninterrupted_one(tmp_path, uninterrupted, fault):
    out = tmp_path / "run"
    killed = child([*SINUSOID, "--out-dir", out], fault=fault)
    assert killed.returncode == -signal.SIGKILL, (fault, killed.returncode, killed.stderr[-2000:])
    if fault.startswith(("checkpoint-half", "checkpoint-before-rename")):
        assert list(out.glob(".*.pt.*.tmp")), "the kill came during the write: its temporary file is there"
    resumed = child([*SINUSOID, "--out-dir", out, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_run(uninterrupted, out)


@pytest.mark.slow
def test_kills_at_random_moments_then_resume_equal_the_uninterrupted_run(tmp_path, uninterrupted):
    out, rng = tmp_path / "run", random.Random(17)
    for kill in range(4):
        process = child([*SINUSOID, "--out-dir", out, *(["--resume"] if kill else [])], wait=False)
        started = time.monotonic()
        while not (out / "metrics.jsonl").exists() and process.poll() is None and time.monotonic() - started < 120:
            time.sleep(0.01)  # until it trains: killing the interpreter while it imports tests nothing
        time.sleep(rng.uniform(0.0, 0.6))
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=TIMEOUT_S)
    resumed = child([*SINUSOID, "--out-dir", out, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_run(uninterrupted, out)


def test_a_second_writer_is_refused_while_the_first_finishes_untouched(tmp_path, uninterrupted):
    out = tmp_path / "run"
    held, release = tmp_path / "held", tmp_path / "release"
    first = child([*SINUSOID, "--out-dir", out], fault="hold:5", wait=False,
                  env={"METALAB_FAULT_HELD": str(held), "METALAB_FAULT_RELEASE": str(release)})
    try:
        started = time.monotonic()
        while not held.exists():
            assert first.poll() is None and time.monotonic() - started < TIMEOUT_S, first.communicate()
            time.sleep(0.05)
        for extra in ([], ["--resume"], ["--overwrite"]):
            refused_in_one_line(child([*SINUSOID, "--out-dir", out, *extra]), "another metalab process", str(out))
    finally:
        release.touch()
        _, stderr = first.communicate(timeout=TIMEOUT_S)
    assert first.returncode == 0, stderr[-2000:]
    assert_same_run(uninterrupted, out)


@pytest.mark.parametrize("limit,file", [(10_000, "last.pt"), (30_000, "curves.png")])
def test_a_full_disk_is_one_line_and_the_resumed_run_is_whole(tmp_path, uninterrupted, limit, file):
    """A checkpoint (15 KB here) or the learning curves (60 KB) do not fit: exit 2 naming the file, nothing
    half-written kept; once there is room, --resume completes the same run."""
    out = tmp_path / "run"
    refused_in_one_line(child([*SINUSOID, "--out-dir", out], file_size_limit=limit), file, str(out))
    assert not list(out.glob(".*.tmp"))
    for name in ("last.pt", "best.pt"):
        if (out / name).exists():
            checkpoint.load(out / name)  # whole
    resumed = child([*SINUSOID, "--out-dir", out, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_run(uninterrupted, out)


def test_a_full_disk_while_logging_is_one_line_and_resume_recovers(tmp_path):
    out = tmp_path / "run"
    argv = [*SINUSOID[:4], "150", *SINUSOID[5:], "--out-dir", out]  # 150 logged steps: 25 KB of records
    refused_in_one_line(child(argv, file_size_limit=20_000), "metrics.jsonl")
    resumed = child([*argv, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert [r["step"] for r in strict_records(out / "metrics.jsonl")] == list(range(1, 151))


# ---- Omniglot: kills while the data cache is built ---------------------------------------------------------

def omniglot_args(data_dir, out):
    return ["train", "--preset", "omniglot-demo", "--data-dir", data_dir, "--steps", "4", "--val-every", "2",
            "--checkpoint-every", "2", "--val-episodes", "2", "--meta-batch-size", "2", "--hidden", "4",
            "--threads", "1", "--out-dir", out]


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["cache-decode:500", "cache-half:1"])
def test_a_run_killed_while_building_the_cache_resumes_to_the_same_result(tmp_path, omniglot_dir, fault):
    straight = child(omniglot_args(omniglot_dir, tmp_path / "straight"))  # with the session's cache, built once
    assert straight.returncode == 0, straight.stderr[-2000:]
    cache = {"METALAB_CACHE": str(tmp_path / "cache")}
    killed = child(omniglot_args(omniglot_dir, tmp_path / "run"), fault=fault, env=cache)
    assert killed.returncode == -signal.SIGKILL
    if fault.startswith("cache-half"):
        assert list((tmp_path / "cache").glob(".*.npz.*.tmp")), "the kill came while the cache file was written"
    resumed = child([*omniglot_args(omniglot_dir, tmp_path / "run"), "--resume"], env=cache)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_run(tmp_path / "straight", tmp_path / "run")
    assert not list((tmp_path / "cache").glob(".*.tmp")), "the killed builder's temporary file was not removed"


@pytest.mark.slow
def test_a_full_disk_while_building_the_cache_is_one_line(tmp_path, omniglot_dir):
    cache = tmp_path / "cache"
    result = child(omniglot_args(omniglot_dir, tmp_path / "run"), file_size_limit=200_000,
                   env={"METALAB_CACHE": str(cache)})
    refused_in_one_line(result, "METALAB_CACHE")
    assert not [p for p in cache.iterdir() if not p.name.endswith(".lock")]
