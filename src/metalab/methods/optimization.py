"""Optimization-based adaptation: phi is theta after S gradient-like steps on the support set.

    MAML            phi <- phi - alpha * grad L_support(phi)
    first-order     the same, with grad L_support treated as a constant
    Meta-SGD        phi <- phi - lr (.) grad, with lr learned (one per tensor, or one per element)
    learned update  phi <- phi - alpha * grad + U_w(grad, phi, step): a coordinate-wise MLP shared by all
                    parameters, whose output layer starts at zero so that it starts as MAML

The meta-gradient flows through every inner step with its true second-order terms: the inner gradient
comes from torch.func.grad, which outer autograd differentiates again, i.e. Hessian-vector products;
no Hessian is ever formed.

Everything is a pure function of explicit parameters. `meta` holds every meta-learned tensor:
    meta["theta"]       the model's initial parameters (names as in model.named_parameters())
    meta["learned_lr"]  Meta-SGD only: learned inner learning rates, same names as theta
    meta["update_net"]  learned update only: the update network's parameters
"""

from dataclasses import dataclass
from functools import partial
from typing import Iterator

import torch
from torch import Tensor, nn
from torch.func import grad

from metalab.config import Config
from metalab.data.episode import Episode
from metalab.errors import MetalabError
from metalab.methods import update_rules
from metalab.methods.adapted import Trajectory, final_predictions, step_scores
from metalab.methods.batching import check_vmap_norms, mean_task_loss
from metalab.methods.learner import Learner, Params, copy_parameters
from metalab.methods.method import MetaParams

RULES = ("maml", "fomaml", "metasgd", "learned_update")


@dataclass(frozen=True)
class InnerLoop:
    rule: str = "maml"  # one of RULES
    inner_lr: float = 0.4  # alpha; Meta-SGD's learned rates start from it
    lr_shape: str = "element"  # Meta-SGD: "element" (one rate per weight) or "tensor" (one per tensor)
    update_hidden: int = 20  # learned update network width
    # Learned update: its network reads progress = step / H. H = 0: the steps being run. At test time, H = the
    # meta-training steps keeps the progress of extra steps at the last value meta-training showed it.
    progress_steps: int = 0
    # Learned update: the steps that add the network's correction (0: every step); later ones are plain gradient
    # steps. At test time, the meta-training steps keep the network to the steps it was trained on.
    corrected_steps: int = 0

    def __post_init__(self):
        if self.rule not in RULES:
            raise ValueError(f"unknown inner rule {self.rule!r}; choose one of {RULES}")
        if self.lr_shape not in ("element", "tensor"):
            raise ValueError(f"lr_shape must be 'element' or 'tensor', got {self.lr_shape!r}")


def init_meta(model: nn.Module, inner: InnerLoop) -> MetaParams:
    """Fresh meta-parameters, starting from the model's own initialization."""
    theta = copy_parameters(model)
    meta = {"theta": theta}
    if inner.rule == "metasgd":
        meta["learned_lr"] = {
            name: torch.full(p.shape if inner.lr_shape == "element" else (), inner.inner_lr, dtype=p.dtype)
            for name, p in theta.items()}
    if inner.rule == "learned_update":
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


def _step(meta: MetaParams, inner: InnerLoop, name: str, param: Tensor, gradient: Tensor, progress: float,
          step: int) -> Tensor:
    """The new value of one parameter tensor after inner step number `step` (from 0)."""
    if inner.rule == "metasgd":
        return update_rules.sgd(param, gradient, meta["learned_lr"][name])
    if inner.rule == "learned_update" and not (inner.corrected_steps and step >= inner.corrected_steps):
        return update_rules.learned_update(param, gradient, inner.inner_lr, meta["update_net"], progress)
    return update_rules.sgd(param, gradient, inner.inner_lr)


def adapt_steps(meta: MetaParams, support_x: Tensor, support_y: Tensor, learner: Learner, inner: InnerLoop,
                steps: int, first_order: bool = False) -> Iterator[Params]:
    """Yield phi after 0, 1, ..., `steps` inner steps on one task's support set (support_x [n, ...])."""
    phi = meta["theta"]
    yield phi

    def support_loss(params):
        return learner.loss(learner.predict(params, support_x), support_y)

    horizon = inner.progress_steps or steps
    for step in range(steps):
        gradients = grad(support_loss)(phi)
        if first_order or inner.rule == "fomaml":
            gradients = {name: g.detach() for name, g in gradients.items()}
        progress = min(step, horizon - 1) / horizon
        phi = {name: _step(meta, inner, name, p, gradients[name], progress, step) for name, p in phi.items()}
        yield phi


def adapt(meta, support_x, support_y, learner, inner, steps, first_order=False) -> Params:
    """adapt(theta, support) -> phi."""
    for phi in adapt_steps(meta, support_x, support_y, learner, inner, steps, first_order):
        pass
    return phi


def task_loss(meta, task, learner: Learner, inner: InnerLoop, steps: int,
              first_order: bool = False) -> tuple[Tensor, Tensor]:
    """Query loss after adaptation for one task (tensors without batch dimension), and its score."""
    support_x, support_y, query_x, query_y = task
    phi = adapt(meta, support_x, support_y, learner, inner, steps, first_order)
    return learner.loss_and_score(phi, query_x, query_y)


@dataclass(frozen=True)
class GradientMethod:
    """An optimization-based method on the one seam (methods/method.py)."""

    learner: Learner
    inner: InnerLoop
    train_steps: int = 1  # inner steps during meta-training
    eval_steps: int = 3  # inner steps at validation
    first_order_warmup: int = 0  # meta-steps of first-order MAML before second order
    batching: str = "loop"  # methods/batching.py
    step_name: str = "inner steps"

    def __post_init__(self):
        check_vmap_norms(self.learner.model, self.batching)

    @classmethod
    def from_config(cls, config: Config, learner: Learner) -> "GradientMethod":
        if config.embedding_from:
            raise MetalabError(f"--embedding-from warm-starts a black-box learner's embedding; {config.method} "
                               "has none")
        return cls(learner, InnerLoop(config.method, config.inner_lr, config.lr_shape),
                   train_steps=config.inner_steps, eval_steps=config.eval_inner_steps,
                   first_order_warmup=config.first_order_warmup, batching=config.task_batching)

    def init_meta(self) -> MetaParams:
        return init_meta(self.learner.model, self.inner)

    def meta_loss(self, meta: MetaParams, episode: Episode, step: int) -> tuple[Tensor, Tensor]:
        loss = partial(task_loss, learner=self.learner, inner=self.inner, steps=self.train_steps,
                       first_order=step < self.first_order_warmup)
        return mean_task_loss(loss, meta, episode, self.batching)

    def scores(self, meta: MetaParams, episode: Episode, steps: int) -> Tensor:
        return step_scores(self.learner, self._trajectory(meta), episode, steps, self.batching)

    def predictions(self, meta: MetaParams, episode: Episode, steps: int) -> Tensor:
        return final_predictions(self.learner, self._trajectory(meta), episode, steps, self.batching)

    def _trajectory(self, meta: MetaParams) -> Trajectory:
        return partial(adapt_steps, meta, learner=self.learner, inner=self.inner)
