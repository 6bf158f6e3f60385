"""Several processes compute the one-process run: tasks split over ranks, gradients all-reduced, failures named.

The processes are started here with subprocess on 127.0.0.1 (not mp.spawn), so that what a survivor does is
visible. They run DRIVER: the `metalab` command, in float64 when asked (so that two runs agree to rounding),
recording the gradient Adam applies at each step.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from metalab import checkpoint
from metalab.data.episode import contiguous_share, fixed_episodes
from metalab.data.sinusoid import SinusoidTasks
from metalab.distributed.group import Group, choose_backend, join
from metalab.errors import MetalabError

DRIVER = """
import os, sys
import torch
from metalab.training.optimizer import Adam
if os.environ.get("DRIVER_FLOAT64"):
    torch.set_default_dtype(torch.float64)
rank, grads = int(os.environ.get("RANK", "0")), []
perturb = tuple(map(int, os.environ.get("DRIVER_PERTURB", "-1:-1").split(":")))  # (rank, step): drift apart
adam_step = Adam.step

def record(optimizer, lr):
    grads.append(torch.cat([p.grad.reshape(-1) for p in optimizer.params if p.grad is not None]).clone())
    if (rank, len(grads)) == perturb:
        optimizer.params[0].data.add_(1e-3)
    adam_step(optimizer, lr)

Adam.step = record
from metalab.cli.main import main
code = main(sys.argv[1:])
if os.environ.get("DRIVER_GRADS"):
    torch.save(grads, f"{os.environ['DRIVER_GRADS']}.{rank}")
sys.exit(code)
"""
STEPS = ["--steps", "10", "--meta-batch-size", "16", "--val-every", "5", "--val-episodes", "120",
         "--checkpoint-every", "3", "--log-every", "1", "--threads", "1", "--grad-clip", "1"]
MAML = ["train", "--preset", "sinusoid-maml", "--hidden", "8", *STEPS]
AVERAGE = ["train", "--preset", "sinusoid-average", "--width", "16", *STEPS, "--meta-batch-size", "15"]  # 8 + 7
PRETRAIN = ["pretrain", "--problem", "sinusoid", "--hidden", "8", "--batch-size", "16", "--steps-per-epoch", "5",
            "--max-epochs", "2", "--val-episodes", "60", "--threads", "1"]
FLOAT64 = {"DRIVER_FLOAT64": "1"}
CLOSE = {"rtol": 1e-10, "atol": 1e-13}  # float64 sums of the same terms in another order


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(tmp: Path, argv: list[str], processes: int, env: dict | None = None) -> list[subprocess.Popen]:
    """`processes` ranks of DRIVER argv; 0: the plain command, without any distributed variable."""
    driver = tmp / "driver.py"
    driver.write_text(DRIVER)
    port, started = free_port(), []
    for rank in range(max(processes, 1)):
        variables = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
        if processes:
            variables.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(processes),
                             LOCAL_WORLD_SIZE=str(processes), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        started.append(subprocess.Popen([sys.executable, str(driver), *argv], env=variables, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    return started


def finish(processes: list[subprocess.Popen], timeout: float = 180) -> list[tuple[int, str, str]]:
    """(exit code, stdout, stderr) of each process, once all have ended."""
    outputs = [p.communicate(timeout=timeout) for p in processes]
    return [(p.returncode, *output) for p, output in zip(processes, outputs)]


def succeeded(results) -> None:
    for code, out, err in results:
        assert code == 0, err[-3000:]


def run_pair(tmp: Path, argv: list[str], out_flag: str) -> tuple[Path, Path]:
    """The one-process run and the two-process run of argv (float64), side by side; their folders."""
    one, two = tmp / "one", tmp / "two"
    first = start(tmp, [*argv, out_flag, str(one)], 0, {**FLOAT64, "DRIVER_GRADS": str(one / "grads")})
    second = start(tmp, [*argv, out_flag, str(two)], 2, {**FLOAT64, "DRIVER_GRADS": str(two / "grads")})
    results = finish(first + second)
    succeeded(results)
    assert results[2][1] == "", "rank 1 prints nothing"
    return one, two


def assert_same_gradients(one: Path, two: Path) -> None:
    reference, rank0, rank1 = (torch.load(path, weights_only=True) for path in
                               (one / "grads.0", two / "grads.0", two / "grads.1"))
    assert len(reference) == len(rank0) == 10
    for expected, got, other in zip(reference, rank0, rank1):
        assert got.dtype == torch.float64 and torch.equal(got, other)  # every rank applies the same gradient
        torch.testing.assert_close(got, expected, **CLOSE)


def assert_same_tensors(a: dict, b: dict, exact: bool = False) -> None:
    assert a.keys() == b.keys()
    for name in a:
        if exact:
            assert torch.equal(a[name], b[name]), name
        else:
            torch.testing.assert_close(a[name], b[name], **CLOSE)


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(one: Path, two: Path, exact: bool = False) -> None:
    a, b = checkpoint.load(one / "last.pt"), checkpoint.load(two / "last.pt")
    assert a["step"] == b["step"] == 10
    for group in a["meta"]:
        assert_same_tensors(a["meta"][group], b["meta"][group], exact)
    for key in ("exp_avg", "exp_avg_sq"):
        assert_same_tensors({i: s[key] for i, s in a["optimizer"]["state"].items()},
                            {i: s[key] for i, s in b["optimizer"]["state"].items()}, exact)
    logged_a, logged_b = metrics(one), metrics(two)
    assert [r["step"] for r in logged_a] == [r["step"] for r in logged_b] == list(range(1, 11))
    for ra, rb in zip(logged_a, logged_b):
        for key in ("loss", "score", "grad_norm", "val"):
            assert (key in ra) == (key in rb)
            if key in ra:
                assert ra[key] == pytest.approx(rb[key], rel=1e-10, abs=1e-13), (ra["step"], key)


@pytest.fixture(scope="module")
def maml_runs(tmp_path_factory) -> tuple[Path, Path]:
    return run_pair(tmp_path_factory.mktemp("maml"), MAML, "--out-dir")


def test_maml_on_two_processes_of_8_tasks_is_the_run_of_one_process_of_16(maml_runs):
    assert_same_gradients(*maml_runs)
    assert_same_run(*maml_runs)


def test_a_black_box_learner_on_unequal_shares_is_the_one_process_run(tmp_path):
    one, two = run_pair(tmp_path, AVERAGE, "--out-dir")  # 15 tasks: 8 on rank 0, 7 on rank 1
    assert_same_gradients(one, two)
    assert_same_run(one, two)


def test_pretraining_on_two_processes_is_the_one_process_run(tmp_path):
    one, two = run_pair(tmp_path, PRETRAIN, "--out")
    assert_same_gradients(one, two)
    a, b = checkpoint.load(one / "pretrained.pt"), checkpoint.load(two / "pretrained.pt")
    assert_same_tensors(a["body"], b["body"])
    assert_same_tensors(a["head"], b["head"])
    assert a["epoch"] == b["epoch"] and a["val"] == pytest.approx(b["val"], rel=1e-10)


def test_a_run_resumes_on_two_processes_from_a_checkpoint_of_one(tmp_path, maml_runs):
    run = tmp_path / "run"
    [(code, _, _)] = finish(start(tmp_path, [*MAML, "--out-dir", str(run)], 0, {**FLOAT64,
                                                                                 "METALAB_TEST_FAULT": "kill@0:8"}))
    assert code == -9 and checkpoint.load(run / "last.pt")["step"] == 6
    succeeded(finish(start(tmp_path, [*MAML, "--out-dir", str(run), "--resume"], 2, FLOAT64)))
    assert_same_run(maml_runs[0], run)


def test_a_killed_rank_makes_the_other_stop_naming_it_and_the_step(tmp_path):
    run = tmp_path / "run"
    processes = start(tmp_path, [*MAML, "--out-dir", str(run), "--dist-timeout", "60"], 2,
                      {"METALAB_TEST_FAULT": "kill@1:5"})
    (code, _, err), (killed, _, _) = finish(processes, timeout=60)  # a survivor that hung would time out here
    assert killed == -9 and code == 2
    assert "metalab: error: rank 1 (last entered step 4) stopped responding at step 5" in err
    assert "Traceback" not in err
    assert checkpoint.load(run / "last.pt")["step"] == 3  # the last checkpoint is intact


def test_a_hung_rank_makes_the_other_stop_after_the_timeout(tmp_path):
    run = tmp_path / "run"
    processes = start(tmp_path, [*MAML, "--out-dir", str(run), "--dist-timeout", "3"], 2,
                      {"METALAB_TEST_FAULT": "hang@1:5"})
    try:
        code, _, err = finish(processes[:1], timeout=60)[0]
    finally:
        processes[1].kill()
        processes[1].communicate()
    assert code == 2 and "rank 1 (last entered step 4) stopped responding at step 5" in err
    assert "Timed out" in err


def test_parameters_that_drift_apart_stop_the_run_on_every_rank(tmp_path):
    run = tmp_path / "run"
    results = finish(start(tmp_path, [*MAML, "--out-dir", str(run), "--dist-check-every", "2"], 2,
                           {"DRIVER_PERTURB": "1:3"}))
    for code, _, err in results:
        assert code == 2 and "at step 4 the parameters of rank(s) [1] differ from rank 0's" in err


def test_evaluation_scores_do_not_depend_on_the_number_of_processes(tmp_path, maml_runs):
    argv = ["eval", str(maml_runs[0] / "last.pt"), "--episodes", "120", "--threads", "1", "--save-scores"]
    results = finish(start(tmp_path, [*argv, str(tmp_path / "one.npy")], 0, FLOAT64)
                     + start(tmp_path, [*argv, str(tmp_path / "two.npy")], 2, FLOAT64))
    succeeded(results)
    assert np.array_equal(np.load(tmp_path / "one.npy"), np.load(tmp_path / "two.npy"))  # exactly: same batches
    assert "MSE" in results[1][1] and results[2][1] == ""  # rank 0 reports, rank 1 is silent


@pytest.mark.slow
def test_torchrun_restarts_a_failed_run_from_its_checkpoint_to_the_uninterrupted_result(tmp_path, maml_runs):
    run, driver = tmp_path / "run", tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, **FLOAT64, "METALAB_TEST_FAULT": "kill@1:8", "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).parent / "torchrun"
    result = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "--max-restarts", "1",
                             str(driver), *MAML, "--out-dir", str(run)], env=env, text=True, capture_output=True,
                            timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torchrun restart 1: resuming" in result.stdout
    assert_same_run(maml_runs[1], run, exact=True)  # the same two processes, uninterrupted


# One process: the pieces, without starting anything.

def test_shares_are_contiguous_near_equal_and_cover_everything_in_order():
    for count in range(0, 20):
        for parts in range(1, 6):
            shares = [contiguous_share(count, part, parts) for part in range(parts)]
            assert [i for start, stop in shares for i in range(start, stop)] == list(range(count))
            assert max(b - a for a, b in shares) - min(b - a for a, b in shares) <= 1


def test_the_shares_of_the_evaluation_episodes_are_the_episodes():
    tasks = SinusoidTasks()
    whole = list(fixed_episodes(tasks, 3, 120, batch_size=50))
    for parts in (1, 2, 3, 4):
        shared = [e for rank in range(parts) for e in fixed_episodes(tasks, 3, 120, batch_size=50, share=(rank, parts))]
        assert len(shared) == len(whole) and all(torch.equal(a.query_y, b.query_y) for a, b in zip(shared, whole))


def test_backends_and_bad_settings():
    assert choose_backend("auto", "cpu") == "gloo" and choose_backend("gloo", "cuda") == "gloo"
    if torch.distributed.is_nccl_available():
        assert choose_backend("auto", "cuda:0") == "nccl"
    with pytest.raises(MetalabError, match="nccl needs a CUDA device"):
        choose_backend("nccl", "cpu")
    with pytest.raises(MetalabError, match="--dist-backend must be one of"):
        choose_backend("mpi", "cpu")
    with pytest.raises(MetalabError, match="16 tasks of a meta-batch cannot be split over 32 processes"):
        Group(rank=0, size=32).share(16, "tasks of a meta-batch")


def test_without_torchrun_the_group_is_this_process_alone(monkeypatch):
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "2")
    with join() as group:
        assert (group.rank, group.size, group.is_main, group.restarts) == (0, 1, True, 2)
        assert group.share(5, "tasks") == (0, 5) and not torch.distributed.is_initialized()
    with pytest.raises(MetalabError, match="--dist-timeout must be a positive"):
        with join(timeout_s=0):
            pass
    with pytest.raises(MetalabError, match="--dist-backend must be one of"):
        with join("mpi"):
            pass
    with join("nccl", device="cuda") as group:  # one process never needs NCCL (nor, here, a GPU)
        assert group.size == 1
