"""The codebase's shape: imports point down, modules stay small, and a new method is one file plus one line."""

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from metalab.config import preset
from metalab.data.episode import Episode, fixed_episodes, generator_for
from metalab.evaluation.evaluate import evaluate
from metalab.methods import registry
from metalab.methods.learner import Learner, regression
from metalab.models.networks import mlp
from metalab.problem import Problem
from metalab.training.loop import train

SRC = Path(__file__).resolve().parents[1] / "src"


def test_imports_point_down_the_layers():
    """The layers contract in pyproject.toml (cli > training > evaluation > problem > methods > models > plots >
    data > checkpoint > runtime > atomic > config > errors), checked by import-linter."""
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--config", str(SRC.parent / "pyproject.toml")], capture_output=True,
                            text=True, cwd=SRC.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_no_module_is_over_300_lines():
    sizes = {path.relative_to(SRC): len(path.read_text().splitlines()) for path in SRC.rglob("*.py")}
    assert {path: lines for path, lines in sizes.items() if lines > 300} == {}


# ---- a new method: the file a user writes ------------------------------------------------------------------

@dataclass(frozen=True)
class ShrunkMean:
    """A toy method: predict every query's y as a * mean(support y) + b, with (a, b) meta-learned."""

    learner: Learner
    eval_steps: int = 0
    step_name: str = ""

    @classmethod
    def from_config(cls, config, learner):
        return cls(learner)

    def init_meta(self):
        return {"theta": {"a": torch.zeros(()).requires_grad_(True), "b": torch.zeros(()).requires_grad_(True)}}

    def _predict(self, meta, episode):
        theta = meta["theta"]
        return (theta["a"] * episode.support_y.mean(1, keepdim=True) + theta["b"]).expand_as(episode.query_y)

    def _losses(self, meta, episode):
        return ((self._predict(meta, episode) - episode.query_y) ** 2).mean(dim=(1, 2))  # [B]

    def meta_loss(self, meta, episode, step):
        losses = self._losses(meta, episode)
        return losses.mean(), losses.mean().detach()

    def scores(self, meta, episode, steps):
        with torch.no_grad():
            return self._losses(meta, episode).unsqueeze(0)

    def predictions(self, meta, episode, steps):
        with torch.no_grad():
            return self._predict(meta, episode)


class Offsets:
    """y = c + noise, c ~ U(-2, 2) per task: the support mean predicts the queries."""

    def sample(self, generator, batch_size):
        c = torch.rand(batch_size, 1, 1, generator=generator) * 4 - 2
        y = c + 0.1 * torch.randn(batch_size, 20, 1, generator=generator)
        x = torch.zeros_like(y)
        return Episode(x[:, :10], y[:, :10], x[:, 10:], y[:, 10:])


def test_a_new_method_is_one_class_and_one_registry_line(tmp_path):
    registry.register("shrunk_mean", registry.Entry(ShrunkMean.from_config))  # the one line
    try:
        config = preset("sinusoid-maml").replace(method="shrunk_mean", steps=300, val_every=100, val_episodes=20,
                                                  meta_lr=0.05, threads=1)
        problem = Problem(regression(mlp(1, 4)), {"train": Offsets(), "val": Offsets()})
        train(config, tmp_path, problem=problem)
        from metalab import checkpoint

        meta = checkpoint.load(tmp_path / "best.pt")["meta"]
        method = registry.make_method(config, problem.learner)
        after = evaluate(meta, method, fixed_episodes(Offsets(), seed=0, count=50), steps=[0])[0]
        before = evaluate(method.init_meta(), method, fixed_episodes(Offsets(), seed=0, count=50), steps=[0])[0]
        episode = Offsets().sample(generator_for(0, 1), 4)
        scored = problem.learner.task_losses(method.predictions(meta, episode, 0), episode.query_y)[1]
        torch.testing.assert_close(scored, method.scores(meta, episode, 0)[0])
    finally:
        del registry.METHODS["shrunk_mean"]
    assert float(meta["theta"]["a"]) > 0.8  # it learned to trust the support mean
    assert after.mean < 0.1 * before.mean


def test_version_and_help_without_a_command(capsys):
    from metalab import __version__
    from metalab.cli.main import main

    assert main([]) == 0
    assert "COMMAND" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit:
        main(["--version"])
    assert exit.value.code == 0
    assert capsys.readouterr().out.strip() == f"metalab {__version__}"
