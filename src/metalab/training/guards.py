"""A run that diverges stops at once, naming the step and the last good checkpoint; nothing non-finite is saved.
And a classification run whose validation accuracy never rose above chance says so at the end."""

import math
from pathlib import Path

import torch

from metalab.config import Config
from metalab.errors import MetalabError
from metalab.methods.learner import Metric


class Guard:
    """Checks each step's numbers; remembers the last checkpoint written (always finite: checkpoint.save)."""

    def __init__(self, config: Config, last_good: Path | None = None, step: int = 0):
        self.config = config
        self.last_good = (last_good, step) if last_good is not None else None

    def saved(self, path: Path, step: int) -> None:
        self.last_good = (path, step)

    def step(self, step: int, loss: float, grad_norm: float) -> None:
        """Before the optimizer's step: the loss and the meta-gradient's norm are finite."""
        if not math.isfinite(loss):
            self._stop(f"the meta-training loss became {loss} at step {step}")
        if not math.isfinite(grad_norm):
            self._stop(f"the meta-gradient became {grad_norm} (its norm) at step {step}")

    def parameters(self, step: int, params: list[torch.Tensor]) -> None:
        """Before meta-parameters are validated or saved: they are finite."""
        if not all(bool(torch.isfinite(p).all()) for p in params):
            self._stop(f"the meta-parameters became non-finite at step {step}")

    def validation(self, step: int, value: float, metric: Metric) -> None:
        if not math.isfinite(value):
            self._stop(f"the validation {metric.name} became {value} at step {step}")

    def _stop(self, what: str) -> None:
        config = self.config
        good = f"{self.last_good[0]} (step {self.last_good[1]})" if self.last_good else "none written yet"
        raise MetalabError(f"{what}: the run diverged; lower --meta-lr or --inner-lr (now {config.meta_lr} and "
                           f"{config.inner_lr}) or enable --grad-clip. The last good checkpoint: {good}")


def gradient_norm(params: list[torch.Tensor], max_norm: float) -> float:
    """The meta-gradient's global norm, after clipping it to `max_norm` (0: no clipping)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    if max_norm > 0:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    return float(torch.nn.utils.get_total_norm(grads))


def chance_note(metric: Metric, config: Config, best: float | None) -> str | None:
    """A line for the end of a classification run whose best validation accuracy is within sampling noise of
    chance (1 / ways): the noise of the mean of val_episodes * ways * queries guesses of probability 1 / ways."""
    if metric.name != "accuracy" or best is None:
        return None
    chance = 1.0 / config.ways
    guesses = config.val_episodes * config.ways * config.queries
    margin = 1.96 * math.sqrt(chance * (1 - chance) / guesses)
    if best > chance + margin:
        return None
    return (f"warning: the best validation accuracy, {best:.4f}, never beat chance ({chance:.4f} for "
            f"{config.ways} ways, noise ±{margin:.4f}): the network learned nothing. Lower --inner-lr or "
            "--meta-lr, or train longer")
