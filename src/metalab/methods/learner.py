"""What every method is given: a stateless network, a loss, and the score reported for a task."""

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

Params = dict[str, Tensor]


@dataclass(frozen=True)
class Learner:
    """The problem as the methods see it: a stateless network and a loss."""

    model: nn.Module  # used only through functional_call; must update no buffers in place
    loss: Callable[[Tensor, Tensor], Tensor]  # (prediction [n, ...], target [n, ...]) -> scalar

    def predict(self, phi: Params, x: Tensor) -> Tensor:
        """predict(phi, query): the network's output [n, out] for inputs x [n, ...]."""
        return functional_call(self.model, phi, (x,))


def copy_parameters(model: nn.Module) -> Params:
    """The model's current parameters as detached copies, by name: a starting point that owns its memory."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def score(prediction: Tensor, target: Tensor, loss: Tensor) -> Tensor:
    """Accuracy for class labels, else the loss itself (MSE for regression)."""
    if target.dtype == torch.int64:
        return (prediction.argmax(-1) == target).float().mean()
    return loss.detach()


def cross_entropy(prediction, target):
    return F.cross_entropy(prediction, target)


def mse(prediction, target):
    return F.mse_loss(prediction, target)
