"""Optimization-based adaptation: phi is theta after S gradient-like steps on the support set.

    MAML            phi <- phi - alpha * grad L_support(phi)
    first-order     the same, with grad L_support treated as a constant
    Meta-SGD        phi <- phi - lr (.) grad, with lr learned (one per tensor, or one per element)
    learned update  phi <- phi - alpha * grad + U_w(grad, phi, step): a coordinate-wise MLP shared by all
                    parameters (Andrychowicz et al. 2016; Ravi & Larochelle 2017), whose output layer starts
                    at zero so that it starts as MAML

The meta-gradient flows through every inner step with its true second-order terms: the inner gradient
comes from torch.func.grad, which outer autograd differentiates again, i.e. Hessian-vector products;
no Hessian is ever formed.

Everything is a pure function of explicit parameters. `meta` holds every meta-learned tensor:
    meta["theta"]       the model's initial parameters (names as in model.named_parameters())
    meta["inner_lr"]    Meta-SGD only: learned inner learning rates, same names as theta
    meta["update_net"]  learned update only: the update network's parameters
"""

from dataclasses import dataclass, replace
from functools import partial
from typing import Iterator

import torch
from torch import Tensor, nn
from torch.func import grad, vmap

from metalab.config import GRADIENT_METHODS
from metalab.errors import MetalabError
from metalab.methods.learner import Learner, Params, copy_parameters, score


@dataclass(frozen=True)
class InnerLoop:
    method: str = "maml"
    inner_lr: float = 0.4  # alpha; Meta-SGD's learned rates and the update network start from it
    lr_shape: str = "element"  # Meta-SGD: "element" (one rate per weight) or "tensor" (one per tensor)
    update_hidden: int = 20  # learned update network width

    def __post_init__(self):
        if self.method not in GRADIENT_METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {GRADIENT_METHODS}")
        if self.lr_shape not in ("element", "tensor"):
            raise ValueError(f"lr_shape must be 'element' or 'tensor', got {self.lr_shape!r}")

    @property
    def first_order(self) -> bool:
        return self.method == "fomaml"


def init_meta(model: nn.Module, inner: InnerLoop) -> dict[str, Params]:
    """Fresh meta-parameters, starting from the model's own initialization."""
    theta = copy_parameters(model)
    meta = {"theta": theta}
    if inner.method == "metasgd":
        meta["inner_lr"] = {
            name: torch.full(p.shape if inner.lr_shape == "element" else (), inner.inner_lr, dtype=p.dtype)
            for name, p in theta.items()}
    if inner.method == "learned_update":
        meta["update_net"] = init_update_net(inner.update_hidden)
    for group in meta.values():
        for p in group.values():
            p.requires_grad_(True)
    return meta


def init_update_net(hidden: int, generator: torch.Generator | None = None) -> Params:
    """A 3 -> hidden -> 1 tanh MLP over (gradient, parameter, step fraction) of one coordinate.
    The output layer is zero, so the first update equals plain gradient descent."""
    w1 = torch.randn(hidden, 3, generator=generator) * (1.0 / 3**0.5)
    return {"w1": w1, "b1": torch.zeros(hidden), "w2": torch.zeros(1, hidden), "b2": torch.zeros(1)}


def _update_net(net: Params, features: Tensor) -> Tensor:
    """features [n, 3] -> [n]"""
    return (torch.tanh(features @ net["w1"].T + net["b1"]) @ net["w2"].T + net["b2"]).squeeze(-1)


def _step(meta, inner: InnerLoop, name: str, param: Tensor, gradient: Tensor, step: int, steps: int) -> Tensor:
    """The new value of one parameter tensor after one inner step."""
    if inner.method == "metasgd":
        return param - meta["inner_lr"][name] * gradient
    update = -inner.inner_lr * gradient
    if inner.method == "learned_update":
        features = torch.stack([gradient.reshape(-1), param.reshape(-1),
                                torch.full_like(param.reshape(-1), step / max(steps, 1))], dim=-1)
        update = update + _update_net(meta["update_net"], features).view_as(param)
    return param + update


def adapt_steps(meta: dict[str, Params], support_x: Tensor, support_y: Tensor, learner: Learner,
                inner: InnerLoop, steps: int) -> Iterator[Params]:
    """Yield phi after 0, 1, ..., `steps` inner steps on one task's support set (support_x [n, ...])."""
    phi = meta["theta"]
    yield phi

    def support_loss(params):
        return learner.loss(learner.predict(params, support_x), support_y)

    for step in range(steps):
        gradients = grad(support_loss)(phi)
        if inner.first_order:
            gradients = {name: g.detach() for name, g in gradients.items()}
        phi = {name: _step(meta, inner, name, p, gradients[name], step, steps) for name, p in phi.items()}
        yield phi


def adapt(meta, support_x, support_y, learner, inner, steps) -> Params:
    """adapt(theta, support) -> phi."""
    for phi in adapt_steps(meta, support_x, support_y, learner, inner, steps):
        pass
    return phi


def task_loss(meta, episode_task, learner: Learner, inner: InnerLoop, steps: int) -> tuple[Tensor, Tensor]:
    """Query loss after adaptation for one task (tensors without batch dimension), and its accuracy
    (classification) or the loss again (regression)."""
    support_x, support_y, query_x, query_y = episode_task
    phi = adapt(meta, support_x, support_y, learner, inner, steps)
    prediction = learner.predict(phi, query_x)
    loss = learner.loss(prediction, query_y)
    return loss, score(prediction, query_y, loss)


@dataclass(frozen=True)
class GradientMethod:
    """An optimization-based method as the shared loop and evaluation use it (see methods/method.py)."""

    learner: Learner
    inner: InnerLoop
    train_steps: int = 1  # inner steps during meta-training
    eval_steps: int = 3  # inner steps at validation
    first_order_warmup: int = 0  # meta-steps of first-order MAML before second order
    batching: str = "loop"  # see training/meta_step.py

    def __post_init__(self):
        if self.batching == "vmap" and any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                           for m in self.learner.model.modules()):
            raise MetalabError("tasks batched by vmap get a wrong second-order meta-gradient through torch's "
                               "BatchNorm layers; use metalab.models.networks.SetBatchNorm in the network, "
                               "or --task-batching loop")

    def init_meta(self) -> dict[str, Params]:
        return init_meta(self.learner.model, self.inner)

    def task_loss(self, step: int):
        inner = self.inner
        if step < self.first_order_warmup and inner.method == "maml":
            inner = replace(inner, method="fomaml")
        return partial(task_loss, learner=self.learner, inner=inner, steps=self.train_steps)

    def scores(self, meta, episode, steps: int) -> Tensor:
        """[steps + 1, B]: each task's query score after 0..steps inner steps; tasks batched as in training."""

        def task_scores(support_x, support_y, query_x, query_y) -> Tensor:
            column = []
            for phi in adapt_steps(meta, support_x, support_y, self.learner, self.inner, steps):
                prediction = self.learner.predict(phi, query_x)
                column.append(score(prediction, query_y, self.learner.loss(prediction, query_y)))
            return torch.stack(column)

        with torch.no_grad():  # torch.func.grad in the inner steps still differentiates
            if self.batching == "vmap":
                return vmap(task_scores, randomness="error")(*episode).T
            return torch.stack([task_scores(*task) for task in zip(*episode)], dim=1)
