"""Optimization-based adaptation: phi is theta after S gradient-like steps on the support set.

    MAML            phi <- phi - alpha * grad L_support(phi)
    first-order     the same, with grad L_support treated as a constant
    Meta-SGD        phi <- phi - lr (.) grad, with lr learned (one per tensor, or one per element)
    learned update  phi <- phi - alpha * grad + U_w(grad, phi, step): a coordinate-wise MLP shared by all
                    parameters, whose output layer starts at zero so that it starts as MAML

The meta-gradient flows through every inner step with its true second-order terms: the inner gradient
is taken with create_graph, so that outer autograd differentiates it again, i.e. Hessian-vector products;
no Hessian is ever formed. The tasks of a meta-batch adapt together: phi holds one copy of every tensor per
task ([T, ...]), the forward passes are mapped over tasks (methods/batching.py), and one torch.autograd.grad
of the tasks' summed support losses gives every task's gradient at once, since task t's loss depends on
phi[t] alone. Plain autograd rather than torch.func.grad under vmap: the same numbers, no torch._dynamo import,
and torch's own batch norm differentiated exactly (docs/design.md).

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

from metalab.config import Config
from metalab.data.episode import Episode
from metalab.errors import MetalabError
from metalab.methods import update_rules
from metalab.methods.adapted import Trajectory, final_predictions, step_scores
from metalab.methods.batching import map_tasks, mean_task_loss
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


def adapt_tasks_steps(meta: MetaParams, support_x: Tensor, support_y: Tensor, learner: Learner, inner: InnerLoop,
                      steps: int, batching: str = "loop", first_order: bool = False) -> Iterator[Params]:
    """Yield the tasks' phi (every tensor [T, ...]) after 0, 1, ..., `steps` inner steps on their support sets
    (support_x [T, n, ...], support_y [T, n, ...]), their forward passes mapped over tasks by `batching`.

    Under autograd the steps are differentiable with respect to meta; without it (evaluation), or first-order,
    each inner gradient is taken at a detached copy of phi and its graph freed at once."""
    predict = map_tasks(learner.predict, batching, in_dims=(0, 0))
    task_losses = map_tasks(learner.loss, batching, in_dims=(0, 0))
    second_order = torch.is_grad_enabled() and not (first_order or inner.rule == "fomaml")
    phi = {name: p.expand(len(support_x), *p.shape) for name, p in meta["theta"].items()}
    yield phi

    horizon = inner.progress_steps or steps
    for step in range(steps):
        at = {name: p if second_order and p.requires_grad else p.detach().requires_grad_()
              for name, p in phi.items()}
        with torch.enable_grad():
            loss = task_losses(predict(at, support_x), support_y).sum()
            gradients = torch.autograd.grad(loss, list(at.values()), create_graph=second_order)
        progress = min(step, horizon - 1) / horizon
        phi = {name: _step(meta, inner, name, p, g, progress, step) for (name, p), g in zip(phi.items(), gradients)}
        yield phi


def adapt_steps(meta: MetaParams, support_x: Tensor, support_y: Tensor, learner: Learner, inner: InnerLoop,
                steps: int, first_order: bool = False) -> Iterator[Params]:
    """Yield one task's phi after 0, 1, ..., `steps` inner steps on its support set (support_x [n, ...])."""
    for phi in adapt_tasks_steps(meta, support_x[None], support_y[None], learner, inner, steps, "loop", first_order):
        yield {name: p[0] for name, p in phi.items()}


def adapt(meta, support_x, support_y, learner, inner, steps, first_order=False) -> Params:
    """adapt(theta, support) -> phi, for one task."""
    for phi in adapt_steps(meta, support_x, support_y, learner, inner, steps, first_order):
        pass
    return phi


def tasks_loss(meta: MetaParams, episode: Episode, learner: Learner, inner: InnerLoop, steps: int,
               batching: str = "loop", first_order: bool = False) -> tuple[Tensor, Tensor]:
    """Each task's query loss [T] after adaptation, and its score [T] (detached)."""
    for phi in adapt_tasks_steps(meta, episode.support_x, episode.support_y, learner, inner, steps, batching,
                                 first_order):
        pass
    return map_tasks(learner.loss_and_score, batching, in_dims=(0, 0, 0))(phi, episode.query_x, episode.query_y)


@dataclass(frozen=True)
class GradientMethod:
    """An optimization-based method on the one seam (methods/method.py)."""

    learner: Learner
    inner: InnerLoop
    train_steps: int = 1  # inner steps during meta-training
    eval_steps: int = 3  # inner steps at validation
    first_order_warmup: int = 0  # meta-steps of first-order MAML before second order
    batching: str = "loop"  # methods/batching.py
    chunk: int = 0  # under vmap, tasks per chunk whose graph is freed before the next (0: all at once)
    compiled: str = "false"  # "true", "aot": each chunk's meta-gradient as one compiled program (methods/batching.py)
    step_name: str = "inner steps"

    @classmethod
    def from_config(cls, config: Config, learner: Learner) -> "GradientMethod":
        if config.embedding_from:
            raise MetalabError(f"--embedding-from warm-starts a black-box learner's embedding; {config.method} "
                               "has none")
        return cls(learner, InnerLoop(config.method, config.inner_lr, config.lr_shape),
                   train_steps=config.inner_steps, eval_steps=config.eval_inner_steps,
                   first_order_warmup=config.first_order_warmup, batching=config.task_batching,
                   chunk=config.task_chunk, compiled=config.compile)

    def init_meta(self) -> MetaParams:
        return init_meta(self.learner.model, self.inner)

    def meta_loss(self, meta: MetaParams, episode: Episode, step: int) -> tuple[Tensor, Tensor]:
        loss = partial(tasks_loss, learner=self.learner, inner=self.inner, steps=self.train_steps,
                       batching=self.batching, first_order=step < self.first_order_warmup)
        return mean_task_loss(loss, meta, episode, 1 if self.batching == "loop" else self.chunk, self.compiled)

    def scores(self, meta: MetaParams, episode: Episode, steps: int) -> Tensor:
        return step_scores(self.learner, self._trajectory(meta), episode, steps, self.batching)

    def predictions(self, meta: MetaParams, episode: Episode, steps: int) -> Tensor:
        return final_predictions(self.learner, self._trajectory(meta), episode, steps, self.batching)

    def _trajectory(self, meta: MetaParams) -> Trajectory:
        return partial(adapt_tasks_steps, meta, learner=self.learner, inner=self.inner, batching=self.batching)
