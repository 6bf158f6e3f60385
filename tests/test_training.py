"""The meta-training loop: exact resume, atomic checkpoints, clear errors, the train/eval commands."""

import json

import pytest
import torch
from conftest import DEVICES

from metalab import checkpoint
from metalab.cli.main import main
from metalab.config import preset
from metalab.errors import MetalabError
from metalab.methods.optimization import GradientMethod
from metalab.training import loop

SINUSOID = preset("sinusoid-maml").replace(steps=30, val_every=10, checkpoint_every=5, log_every=5, val_episodes=5,
                                           meta_batch_size=4, threads=1)


def final_meta(path):
    return checkpoint.load(path / "last.pt")["meta"]


@pytest.mark.parametrize("device", DEVICES)
def test_resume_after_a_crash_reaches_the_uninterrupted_result(tmp_path, monkeypatch, device):
    config = SINUSOID.replace(device=device)
    loop.train(config, tmp_path / "straight")

    real_meta_loss = GradientMethod.meta_loss

    def crash_at_step_18(self, meta, episode, step):
        if step == 17:
            raise KeyboardInterrupt("simulated crash")
        return real_meta_loss(self, meta, episode, step)

    monkeypatch.setattr(GradientMethod, "meta_loss", crash_at_step_18)
    with pytest.raises(KeyboardInterrupt):
        loop.train(config, tmp_path / "resumed")
    assert checkpoint.load(tmp_path / "resumed" / "last.pt")["step"] == 15
    monkeypatch.undo()
    loop.train(config, tmp_path / "resumed", resume=True)

    straight, resumed = final_meta(tmp_path / "straight"), final_meta(tmp_path / "resumed")
    for name, value in straight["theta"].items():
        assert torch.equal(value, resumed["theta"][name]), name
    steps = [json.loads(line)["step"] for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 30  # no duplicated records after the resume
    assert (tmp_path / "resumed" / "curves.png").stat().st_size > 0


def test_resume_with_another_config_is_refused(tmp_path):
    loop.train(SINUSOID.replace(steps=5), tmp_path)
    with pytest.raises(MetalabError, match="other settings: --meta-lr 0.001 \\(checkpoint\\) vs 0.5"):
        loop.train(SINUSOID.replace(steps=5, meta_lr=0.5), tmp_path, resume=True)


def test_a_diverging_loss_stops_with_a_clear_error(tmp_path):
    with pytest.raises(MetalabError, match="lower --meta-lr or --inner-lr"):
        loop.train(SINUSOID.replace(inner_lr=1e6, steps=10), tmp_path)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    checkpoint.save(tmp_path / "c.pt", {"step": 1})

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        checkpoint.save(tmp_path / "c.pt", {"step": 2})
    monkeypatch.undo()
    assert checkpoint.load(tmp_path / "c.pt")["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_unreadable_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(MetalabError, match="not a readable metalab checkpoint"):
        checkpoint.load(tmp_path / "bad.pt")
    with pytest.raises(MetalabError, match="no checkpoint"):
        checkpoint.load(tmp_path / "missing.pt")


@pytest.mark.parametrize("device", DEVICES)
def test_train_and_eval_commands_on_omniglot(tmp_path, omniglot_dir, capsys, device):
    out = tmp_path / "run"
    code = main(["train", "--preset", "omniglot-demo", "--data-dir", str(omniglot_dir), "--steps", "4",
                 "--meta-batch-size", "2", "--hidden", "8", "--val-every", "2", "--val-episodes", "4",
                 "--threads", "1", "--device", device, "--out-dir", str(out)])
    assert code == 0
    assert {"best.pt", "last.pt", "metrics.jsonl", "curves.png", "tensorboard"} <= {p.name for p in out.iterdir()}
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tensorboard").iterdir())
    code = main(["eval", str(out / "best.pt"), "--data-dir", str(omniglot_dir), "--episodes", "6", "--threads", "1",
                 "--json", str(tmp_path / "r.json")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "5-way 1-shot 15-query, 6 test episodes" in printed and "after  3 inner steps" in printed
    results = json.loads((tmp_path / "r.json").read_text())
    assert set(results["after_steps"]) == {"0", "1", "2", "3"}
    # A 5-way head cannot be evaluated 20-way.
    assert main(["eval", str(out / "best.pt"), "--data-dir", str(omniglot_dir), "--ways", "20"]) == 2
    assert "--ways 5" in capsys.readouterr().err


def test_bad_overrides_are_clear_errors(capsys):
    assert main(["train", "--preset", "sinusoid-maml", "--method", "nope"]) == 2
    assert "--method must be one of" in capsys.readouterr().err
    assert main(["train", "--preset", "sinusoid-maml", "--meta-batch-size", "0"]) == 2
    assert "--meta-batch-size must be a positive finite number, got 0" in capsys.readouterr().err
    assert main(["train", "--preset", "sinusoid-maml", "--meta-lr", "nan"]) == 2
    assert "--meta-lr must be a positive finite number, got nan" in capsys.readouterr().err
    assert main(["train", "--preset", "sinusoid-maml", "--device", "gpu"]) == 2
    assert "--device must be cpu, cuda or cuda:N, got 'gpu'" in capsys.readouterr().err
    assert main(["train", "--preset", "sinusoid-maml", "--train-alphabets", "2"]) == 2
    assert "do not apply to sinusoids" in capsys.readouterr().err
    assert main(["train", "--preset", "omniglot-demo", "--train-alphabets", "-1"]) == 2
    assert "--train-alphabets must be a finite number >= 0, got -1" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_on_a_machine_without_one_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--preset", "sinusoid-maml", "--device", "cuda", "--out-dir", str(tmp_path)]) == 2
    assert "this machine has no CUDA device; use --device cpu" in capsys.readouterr().err


def test_the_seed_fixes_the_initialization_and_the_whole_run(tmp_path):
    """torch seeds its global generator differently in every process here; the run must not depend on it."""
    config = SINUSOID.replace(steps=3, val_every=3, checkpoint_every=3)
    torch.manual_seed(123)
    loop.train(config, tmp_path / "a")
    torch.manual_seed(456)
    loop.train(config, tmp_path / "b")
    loop.train(config.replace(seed=1), tmp_path / "c")
    a, b, c = (final_meta(tmp_path / x)["theta"] for x in "abc")
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert not all(torch.equal(a[name], c[name]) for name in a)
