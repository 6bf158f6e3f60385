"""`metalab eval CHECKPOINT --benchmark lake`: a checkpoint's error on each run of a small all_runs.zip, against
a hand count of its predictions; the clear errors of a model that cannot do 20 ways and of a missing archive."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from lake_runs import write_lake_runs

from metalab import checkpoint
from metalab.cli.main import main
from metalab.config import Config
from metalab.data import download
from metalab.data.lake_oneshot import load_runs
from metalab.evaluation.lake import run_errors
from metalab.methods.registry import make_method
from metalab.problem import image_learner


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """A data folder holding the small all_runs.zip, with what it holds."""
    bench = write_lake_runs(tmp_path_factory.mktemp("lake"))
    folder = tmp_path_factory.mktemp("data")
    (folder / "all_runs.zip").write_bytes(bench["nested"].read_bytes())
    return {**bench, "data": folder, "runs": load_runs(bench["nested"])}


@pytest.fixture
def accepted(lake, monkeypatch):
    """The small archive passes the pinned-checksum check (the official file is not on this machine)."""
    md5, _ = download.file_digests(lake["data"] / "all_runs.zip")
    monkeypatch.setitem(download.ARCHIVES, "all_runs", dataclasses.replace(download.ARCHIVES["all_runs"], md5=md5))


def write_checkpoint(path, **fields):
    """A checkpoint of a freshly initialized (seeded) model, as `metalab train` writes its config and meta."""
    config = Config(hidden=8, threads=1, task_batching="loop", **fields)
    torch.manual_seed(3)
    meta = make_method(config, image_learner(config)).init_meta()
    checkpoint.save(path, {"config": dataclasses.asdict(config),
                           "meta": {g: {n: p.detach() for n, p in ps.items()} for g, ps in meta.items()}})
    return config, meta


def wrong_per_run(predicted: np.ndarray, labels: np.ndarray) -> list[float]:
    """Error % of each run, counted query by query against the labels the fixture wrote."""
    errors = []
    for run_predictions, run_labels in zip(predicted, labels, strict=True):
        wrong = sum(int(p) != int(y) for p, y in zip(run_predictions, run_labels, strict=True))
        errors.append(100.0 * wrong / len(run_labels))
    return errors


def eval_lake(capsys, checkpoint_path, *flags) -> tuple[int, str, str]:
    code = main(["eval", str(checkpoint_path), "--benchmark", "lake", "--threads", "1", *flags])
    printed = capsys.readouterr()
    return code, printed.out, printed.err


def test_run_errors_count_the_queries_right_from_the_accuracies(lake):
    runs = lake["runs"]

    class Known:  # scores [steps + 1, R]: after step s, run r has (r + 5 s) of its 20 queries right
        eval_steps, step_name = 2, "inner steps"

        def scores(self, meta, episode, steps):
            right = torch.arange(episode.batch_size) + 5 * torch.arange(steps + 1).unsqueeze(1)
            return (right.float() / 20).to(torch.float32)

    errors = run_errors({"theta": {"w": torch.zeros(1)}}, Known(), runs, 2)
    np.testing.assert_array_equal(errors, [[100, 95, 90], [75, 70, 65], [50, 45, 40]])


def test_protonet_errors_match_a_hand_count(lake, accepted, tmp_path, capsys):
    config, meta = write_checkpoint(tmp_path / "protonet.pt", method="protonet")
    code, out, err = eval_lake(capsys, tmp_path / "protonet.pt", "--data-dir", str(lake["data"]),
                               "--no-download", "--json", str(tmp_path / "r.json"))
    assert code == 0, err
    # By hand: embed every image with the network itself, nearest class image in float64.
    model = image_learner(config).model.double()
    theta = {n: p.detach().double() for n, p in meta["theta"].items()}
    runs = lake["runs"]
    predicted = []
    with torch.no_grad():
        for r in range(runs.num_runs):
            support, query = (torch.func.functional_call(model, theta, (x.double(),)).numpy()
                              for x in (runs.support_x[r], runs.query_x[r]))
            distances = ((query[:, None, :] - support[None, :, :]) ** 2).sum(-1)
            predicted.append(distances.argmin(1))  # class k's image is support row k
    expected = wrong_per_run(np.stack(predicted), lake["labels"])
    assert 0 < np.mean(expected) < 100  # an untrained embedding: some right, some wrong
    results = json.loads((tmp_path / "r.json").read_text())
    assert results["runs"] == ["run01", "run02", "run03"]
    np.testing.assert_allclose(results["after_steps"]["0"]["error_percent"], expected)
    assert results["after_steps"]["0"]["mean"] == pytest.approx(np.mean(expected))
    lines = out.splitlines()
    assert "Lake's 20-way within-alphabet one-shot benchmark, 3 runs of 20 queries" in lines[0]
    table = [line.split() for line in lines[2:6]]
    assert table == [[name, f"{e:.2f}"] for name, e in zip(("run01", "run02", "run03"), expected)] + \
        [["mean", f"{np.mean(expected):.2f}"]]
    assert ("people 4.5%, Bayesian program learning 3.3%, Siamese nets 8%, deep convnet 13.5%" in out
            and "trained on the 30 background alphabets" in out and "the minimal split" in out)


def test_maml_at_twenty_ways_after_one_step_matches_a_hand_count(lake, accepted, tmp_path, capsys):
    config, meta = write_checkpoint(tmp_path / "maml.pt", method="maml", ways=20, inner_lr=0.1, eval_inner_steps=1)
    code, out, err = eval_lake(capsys, tmp_path / "maml.pt", "--data-dir", str(lake["data"]),
                               "--json", str(tmp_path / "r.json"))
    assert code == 0, err
    assert "after 1 inner steps" in out
    # By hand: one SGD step on each run's support cross-entropy with torch.autograd, in float64.
    model = image_learner(config).model.double()
    runs = lake["runs"]
    before, after = [], []
    for r in range(runs.num_runs):
        theta = {n: p.detach().double().requires_grad_(True) for n, p in meta["theta"].items()}
        forward = lambda params, x: torch.func.functional_call(model, params, (x.double(),))  # noqa: E731
        loss = torch.nn.functional.cross_entropy(forward(theta, runs.support_x[r]), runs.support_y[r])
        gradients = torch.autograd.grad(loss, list(theta.values()))
        phi = {n: p - 0.1 * g for (n, p), g in zip(theta.items(), gradients)}
        before.append(forward(theta, runs.query_x[r]).argmax(1).detach().numpy())
        after.append(forward(phi, runs.query_x[r]).argmax(1).detach().numpy())
    results = json.loads((tmp_path / "r.json").read_text())["after_steps"]
    np.testing.assert_allclose(results["0"]["error_percent"], wrong_per_run(np.stack(before), lake["labels"]))
    np.testing.assert_allclose(results["1"]["error_percent"], wrong_per_run(np.stack(after), lake["labels"]))


@pytest.mark.parametrize("method", ["maml", "snail"])
def test_a_five_way_model_says_it_cannot_do_twenty_ways(lake, accepted, tmp_path, capsys, method):
    write_checkpoint(tmp_path / "five.pt", method=method, ways=5, sequence_length=6 if method == "snail" else 0)
    code, out, err = eval_lake(capsys, tmp_path / "five.pt", "--data-dir", str(lake["data"]))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"({method}) was trained 5-way" in err and "cannot do Lake's 20-way benchmark" in err


def test_a_five_way_average_learner_does_twenty_ways(lake, accepted, tmp_path, capsys):
    write_checkpoint(tmp_path / "average.pt", method="average", ways=5)
    code, out, err = eval_lake(capsys, tmp_path / "average.pt", "--data-dir", str(lake["data"]))
    assert code == 0, err
    assert "after reading the support set" in out and out.splitlines()[-4].startswith("mean")


def test_missing_archive_without_download_names_the_fix(tmp_path, capsys):
    write_checkpoint(tmp_path / "protonet.pt", method="protonet")
    code, out, err = eval_lake(capsys, tmp_path / "protonet.pt", "--data-dir", str(tmp_path), "--no-download")
    assert code == 2 and err.count("\n") == 1
    assert f"all_runs.zip (Lake's one-shot runs) is not in {tmp_path}" in err
    assert "one-shot-classification/all_runs.zip into that folder" in err


def test_an_altered_archive_is_refused_by_its_checksum(lake, tmp_path, capsys):
    write_checkpoint(tmp_path / "protonet.pt", method="protonet")
    code, _, err = eval_lake(capsys, tmp_path / "protonet.pt", "--data-dir", str(lake["data"]), "--no-download")
    assert code == 2 and "is not the official all_runs.zip: expected md5 e8996daecdf12afeeb4a53a179f06b19" in err


def test_flags_that_draw_episodes_are_refused(tmp_path, capsys):
    write_checkpoint(tmp_path / "protonet.pt", method="protonet")
    code, _, err = eval_lake(capsys, tmp_path / "protonet.pt", "--ways", "20", "--episodes", "5")
    assert code == 2 and "drop --ways, --episodes" in err
    assert main(["eval", str(tmp_path / "protonet.pt"), "--no-download"]) == 2
    assert "--no-download applies to --benchmark lake" in capsys.readouterr().err
