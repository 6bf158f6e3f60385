"""What every method is given: a stateless network, a loss, and the metric a task is scored by."""

import math
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

Params = dict[str, Tensor]


def mean_value(predictions: Tensor) -> Tensor:
    """The mean of M models' predictions [M, ...] of values: [...]."""
    return predictions.mean(0)


def mean_probability(predictions: Tensor) -> Tensor:
    """The log of the mean of M models' class probabilities (softmax of their class scores [M, ..., classes]),
    [..., classes] float64: class scores again, so a loss and a metric read them as they read one model's."""
    log_probabilities = torch.log_softmax(predictions.double(), dim=-1)
    return torch.logsumexp(log_probabilities, dim=0) - math.log(len(predictions))


@dataclass(frozen=True)
class Metric:
    """How a task's query predictions are scored, which way is better, and how several models' predictions of
    the same queries make one (an ensemble's: evaluation/ensemble.py)."""

    name: str  # as printed: "accuracy", "MSE", ...
    higher_is_better: bool
    of: Callable[[Tensor, Tensor, Tensor], Tensor]  # (prediction, target, loss) -> scalar score
    average: Callable[[Tensor], Tensor] = mean_value  # (predictions [M, ...] of M models) -> one prediction [...]


ACCURACY = Metric("accuracy", True, lambda prediction, target, loss: (prediction.argmax(-1) == target).float().mean(),
                  mean_probability)
MSE = Metric("MSE", False, lambda prediction, target, loss: loss.detach())


@dataclass(frozen=True)
class Learner:
    """The problem as the methods see it: a stateless network, its loss and its metric."""

    model: nn.Module  # used only through functional_call; must update no buffers in place
    loss: Callable[[Tensor, Tensor], Tensor]  # (prediction [n, ...], target [n, ...]) -> scalar
    metric: Metric = MSE

    def predict(self, phi: Params, x: Tensor) -> Tensor:
        """predict(phi, query): the network's output [n, out] for inputs x [n, ...]."""
        return functional_call(self.model, phi, (x,))

    def loss_and_score(self, phi: Params, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """The loss of phi's predictions for x [n, ...] against y [n, ...], and their score (detached)."""
        prediction = self.predict(phi, x)
        loss = self.loss(prediction, y)
        return loss, self.metric.of(prediction, y, loss)

    def task_losses(self, predictions: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """Each task's loss [B] and score [B] (detached) of predictions [B, n, ...] against targets [B, n, ...]."""
        losses = torch.stack([self.loss(p, y) for p, y in zip(predictions, targets, strict=True)])
        scores = torch.stack([self.metric.of(p, y, loss) for p, y, loss in zip(predictions, targets, losses)])
        return losses, scores


def classification(model: nn.Module, label_smoothing: float = 0.0) -> Learner:
    """Class scores [n, ways] against labels [n]: cross-entropy (against labels smoothed toward uniform by
    `label_smoothing`), scored by accuracy."""
    loss = partial(F.cross_entropy, label_smoothing=label_smoothing) if label_smoothing else cross_entropy
    return Learner(model, loss, ACCURACY)


def regression(model: nn.Module) -> Learner:
    """Predictions [n, d] against targets [n, d]: mean squared error, scored by itself."""
    return Learner(model, mse, MSE)


def copy_parameters(model: nn.Module) -> Params:
    """The model's current parameters as detached copies, by name: a starting point that owns its memory."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def cross_entropy(prediction, target):
    return F.cross_entropy(prediction, target)


def mse(prediction, target):
    return F.mse_loss(prediction, target)
