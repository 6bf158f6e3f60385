"""Implicit MAML (Rajeswaran, Finn, Kakade & Levine 2019): the meta-parameters as a prior, made explicit.

Each task's parameters are the minimizer of its support loss under a Gaussian prior centred at theta,

    phi_i = argmin_phi  L(phi, D_tr_i) + (lambda / 2) ||phi - theta||^2,

reached approximately by S steps of gradient descent from theta, and the meta-gradient of the query loss comes
from the implicit function theorem at that minimizer instead of from differentiating the S steps:

    d L(phi_i, D_test_i) / d theta = (I + H_i / lambda)^-1 grad_phi L(phi_i, D_test_i),
    H_i = the Hessian of L(., D_tr_i) at phi_i,

solved by `cg_steps` of conjugate gradient with Hessian-vector products (reverse over reverse: the gradient of
(grad L) . v, by nested torch.func.grad; forward over reverse, jvp of grad, fails on nn.Linear in this torch with
"ZeroTensors are immutable"); no Hessian is formed. The inner steps run on a detached theta and are never
differentiated, so memory does not grow with their number (benchmarks/bench_imaml.py). Only the paper's
gradient-descent inner solver is here, not its Hessian-free variant.

The training loop calls backward() on what meta_loss returns, so it returns a stand-in: the mean query loss's
value, plus sum(theta * g) - its own value, whose gradient w.r.t. theta is exactly the implicit meta-gradient g.

When conjugate gradient does not converge. (I + H / lambda) is positive definite only where the support loss's
curvature is above -lambda; a network's need not be (Omniglot's Conv4: docs/results.md), since a few inner
steps do not reach the minimum where it would be. CG then stops at the first direction of non-positive curvature
(truncated CG), and each task keeps, of CG's iterates and the first-order meta-gradient b (the limit of large
lambda), the one with the smallest residual ||b - A x||: on an indefinite A, CG's iterates can be worse than b.
Each run warns once when CG is truncated and once when the kept relative residual stays above NOT_CONVERGED (a
handful of CG steps is approximate by design: the paper uses 5). A residual that is not finite (the inner loop diverged) is a
MetalabError naming the fix.
"""

import warnings
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterator

import torch
from torch import Tensor, nn
from torch.func import grad

from metalab.config import Config
from metalab.data.episode import Episode
from metalab.errors import MetalabError
from metalab.methods.adapted import Trajectory, final_predictions, per_task, step_scores
from metalab.methods.batching import map_tasks
from metalab.methods.learner import Learner, Params
from metalab.methods.method import MetaParams

NOT_CONVERGED = 0.1  # CG's relative residual above which a warning says the meta-gradient is approximate


def _dot(a: Params, b: Params) -> Tensor:
    return sum((a[name] * b[name]).sum() for name in a)


def _plus(a: Params, scale: Tensor | float, b: Params) -> Params:
    """a + scale * b, tensor by tensor."""
    return {name: a[name] + scale * b[name] for name in a}


def conjugate_gradient(matvec: Callable[[Params], Params], b: Params, steps: int) -> tuple[Params, Tensor, Tensor]:
    """x ~ A^-1 b by `steps` CG iterations from x = 0, for a symmetric A given by matvec(v) = A v. Returns the
    candidate with the smallest relative residual ||b - A x|| / ||b|| among CG's iterates and b itself (the answer
    when A = I, here the first-order meta-gradient; its residual is free, A b being CG's first product), that
    residual, and whether A showed a direction of non-positive curvature p'Ap <= 0. There CG stops (Steihaug's
    truncation). On an indefinite A, CG's iterates can be far worse than b, which is why the best is kept.
    Free of Python branches on values, so that it runs under vmap."""
    x = {name: torch.zeros_like(t) for name, t in b.items()}
    r, p = b, b
    rr = _dot(r, r)
    b_norm = rr.sqrt()
    truncated = torch.zeros_like(rr, dtype=torch.bool)
    best, best_rr = b, None
    for step in range(steps):
        ap = matvec(p)
        if step == 0:  # p = b: the residual of x = b
            best_rr = _dot(_plus(b, -1.0, ap), _plus(b, -1.0, ap))
        curvature = _dot(p, ap)
        truncated = truncated | ((curvature <= 0) & (rr > 0))
        moving = ~truncated & (rr > 0)  # stopped, or exactly converged: stand still instead of dividing by 0
        alpha = torch.where(moving, rr / curvature, torch.zeros_like(rr))
        x, r = _plus(x, alpha, p), _plus(r, -alpha, ap)
        rr_next = _dot(r, r)
        better = moving & (rr_next < best_rr)
        best = {name: torch.where(better, x[name], best[name]) for name in x}
        best_rr = torch.where(better, rr_next, best_rr)
        p = _plus(r, torch.where(moving, rr_next / rr, torch.zeros_like(rr)), p)
        rr = rr_next
    residual = torch.where(b_norm == 0, torch.zeros_like(b_norm), best_rr.sqrt() / b_norm)  # NaN stays NaN
    return best, residual, truncated


def solve_steps(theta: Params, support_x: Tensor, support_y: Tensor, learner: Learner, lam: float, lr: float,
                steps: int) -> Iterator[Params]:
    """Yield phi after 0..steps gradient steps on L(phi, support) + (lam / 2) ||phi - theta||^2, from theta
    (detached: the trajectory is never differentiated). support_x [n, ...], support_y [n, ...]."""
    theta = {name: t.detach() for name, t in theta.items()}

    def objective(phi):
        prior = sum(((phi[name] - theta[name]) ** 2).sum() for name in phi)
        return learner.loss(learner.predict(phi, support_x), support_y) + 0.5 * lam * prior

    phi = theta
    yield phi
    for _ in range(steps):
        phi = _plus(phi, -lr, grad(objective)(phi))
        yield phi


def task_meta_gradient(theta: Params, task: tuple, learner: Learner, lam: float, lr: float, steps: int,
                       cg_steps: int) -> tuple[Params, Tensor, Tensor, Tensor]:
    """One task (tensors without batch dimension): (its implicit meta-gradient w.r.t. theta, its query loss and
    score at phi, [CG's relative residual, 1 if CG met non-positive curvature else 0]), all detached."""
    support_x, support_y, query_x, query_y = task
    for phi in solve_steps(theta, support_x, support_y, learner, lam, lr, steps):
        pass

    def query_loss(params):
        loss, score = learner.loss_and_score(params, query_x, query_y)
        return loss, (loss, score)

    def support_gradient(params):
        return grad(lambda p: learner.loss(learner.predict(p, support_x), support_y))(params)

    def matvec(v: Params) -> Params:  # (I + H / lam) v, with H v the gradient of (grad L) . v
        return _plus(v, 1.0 / lam, grad(lambda params: _dot(support_gradient(params), v))(phi))

    b, (loss, score) = grad(query_loss, has_aux=True)(phi)
    x, residual, truncated = conjugate_gradient(matvec, b, cg_steps)
    return x, loss.detach(), score.detach(), torch.stack([residual, truncated.to(residual.dtype)]).detach()


@dataclass(frozen=True)
class ImplicitMAML:
    """Implicit MAML on the one seam (methods/method.py)."""

    learner: Learner
    lam: float = 2.0  # lambda, the prior's precision
    inner_lr: float = 0.1
    train_steps: int = 16  # inner gradient steps during meta-training
    eval_steps: int = 16  # inner steps at validation
    cg_steps: int = 5
    batching: str = "loop"  # methods/batching.py
    step_name: str = "inner steps"
    _warned: set = field(default_factory=set, compare=False, repr=False)  # warnings already given in this run

    def __post_init__(self):
        _check_vmap_norms(self.learner.model, self.batching)
        if self.inner_lr * self.lam >= 2 and max(self.train_steps, self.eval_steps) > 0:
            # the pull toward theta alone multiplies phi - theta by (1 - lr * lambda) each step
            raise MetalabError(f"--inner-lr {self.inner_lr} times --imaml-lambda {self.lam} must be below 2, or the "
                               "inner steps diverge; lower --inner-lr")

    @classmethod
    def from_config(cls, config: Config, learner: Learner) -> "ImplicitMAML":
        if config.embedding_from:
            raise MetalabError("--embedding-from warm-starts a black-box learner's embedding; imaml has none")
        return cls(learner, config.imaml_lambda, config.inner_lr, config.inner_steps, config.eval_inner_steps,
                   config.cg_steps, config.task_batching)

    def init_meta(self) -> MetaParams:
        return {"theta": {name: p.detach().clone().requires_grad_(True)
                          for name, p in self.learner.model.named_parameters()}}

    def meta_loss(self, meta: MetaParams, episode: Episode, step: int) -> tuple[Tensor, Tensor]:
        theta = meta["theta"]
        per_task = partial(task_meta_gradient, learner=self.learner, lam=self.lam, lr=self.inner_lr,
                           steps=self.train_steps, cg_steps=self.cg_steps)
        with torch.no_grad():  # torch.func's transforms differentiate inside; nothing outside needs a graph
            gradients, losses, scores, cg = map_tasks(per_task, self.batching, in_dims=(None, 0))(
                {name: t.detach() for name, t in theta.items()}, tuple(episode))
        self._check(cg)
        linear = sum((theta[name] * gradients[name].mean(0)).sum() for name in theta)
        return losses.mean() + (linear - linear.detach()), scores.mean()

    def scores(self, meta: MetaParams, episode: Episode, steps: int) -> Tensor:
        return step_scores(self.learner, self._trajectory(meta), episode, steps, self.batching)

    def predictions(self, meta: MetaParams, episode: Episode, steps: int) -> Tensor:
        return final_predictions(self.learner, self._trajectory(meta), episode, steps, self.batching)

    def _trajectory(self, meta: MetaParams) -> Trajectory:
        return per_task(partial(solve_steps, meta["theta"], learner=self.learner, lam=self.lam, lr=self.inner_lr),
                        self.batching)

    def _check(self, cg: Tensor) -> None:
        """cg [B, 2]: each task's relative residual and whether CG stopped at non-positive curvature. An error if
        a residual is not finite; a warning, once per kind and run, for truncated or unconverged solves."""
        residuals, truncated = cg[:, 0], cg[:, 1] > 0
        if not torch.isfinite(residuals).all():
            raise MetalabError(f"the implicit meta-gradient is not finite (CG residual {residuals.max().item()}): "
                               f"the inner loop diverged; lower --inner-lr (now {self.inner_lr})")
        if truncated.any() and "truncated" not in self._warned:
            self._warned.add("truncated")
            warnings.warn(f"conjugate gradient met non-positive curvature on {int(truncated.sum())} of "
                          f"{len(cg)} tasks (I + H / lambda is not positive definite there: the support loss's "
                          f"curvature is below -lambda) and kept, of its iterates and the first-order meta-gradient, "
                          f"the one with the smallest residual; raise --imaml-lambda (now {self.lam}) for an exact "
                          "solve", stacklevel=2)
        if residuals.max().item() > NOT_CONVERGED and "approximate" not in self._warned:
            self._warned.add("approximate")
            warnings.warn(f"conjugate gradient stopped at a relative residual of {residuals.max().item():.3g} after "
                          f"{self.cg_steps} steps: the meta-gradient is approximate; raise --cg-steps or "
                          "--imaml-lambda", stacklevel=2)


def _check_vmap_norms(model: nn.Module, batching: str) -> None:
    """torch.func's transforms under vmap get the second derivatives of torch's own batch norm wrong."""
    if batching == "vmap" and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        raise MetalabError("iMAML with its tasks batched by vmap gets wrong Hessian-vector products through torch's "
                           "BatchNorm layers; use metalab.models.networks.SetBatchNorm in the network, or "
                           "--task-batching loop")
