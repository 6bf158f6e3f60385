"""How sharply each task's support loss curves at theta, against the inner learning rate.

Gradient descent with rate alpha on a quadratic is stable only while alpha * lambda_max < 2 (lambda_max the
Hessian's largest eigenvalue): past that, the component along its eigenvector grows by |1 - alpha * lambda|
every step. For each task this computes the largest eigenvalue of P^1/2 H P^1/2, with H the Hessian of the
support loss at theta and P the inner learning rates (alpha everywhere for MAML; Meta-SGD's learned rates), by
power iteration on Hessian-vector products (double backward; no Hessian is formed), at theta and again after
the first inner step. A network's curvature moves with its parameters, so a value above 2 at theta is a warning,
not a verdict; the value after one step predicts divergence better (docs/results.md).
"""

import torch
from torch import Tensor

from metalab.data.episode import Episode
from metalab.methods.learner import Learner, Params
from metalab.methods.method import MetaParams
from metalab.methods.optimization import InnerLoop, adapt


def top_eigenvalue(matrix_vector, like: Params, iterations: int = 100, tolerance: float = 1e-4,
                   generator: torch.Generator | None = None) -> float:
    """The largest (most positive) eigenvalue of a symmetric operator given as v -> M v on parameter dicts.
    Power iteration finds the eigenvalue of largest magnitude; if that one is negative, a second run on
    M - mu I (whose spectrum is then >= 0) finds the largest."""
    def power(operator) -> float:
        v = {n: torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) for n, p in like.items()}
        value = 0.0
        for _ in range(iterations):
            norm = torch.sqrt(sum((x * x).sum() for x in v.values()))
            v = {n: x / norm for n, x in v.items()}
            mv = operator(v)
            new = float(sum((v[n] * mv[n]).sum() for n in v))  # Rayleigh quotient
            v = mv
            if abs(new - value) <= tolerance * max(abs(new), 1e-12):
                return new
            value = new
        return value

    dominant = power(matrix_vector)
    if dominant >= 0:
        return dominant
    return dominant + power(lambda v: {n: x - dominant * v[n] for n, x in matrix_vector(v).items()})


def step_curvature(learner: Learner, theta: Params, rates: Params | float, support_x: Tensor, support_y: Tensor,
                   generator: torch.Generator | None = None) -> float:
    """lambda_max(P^1/2 H P^1/2) for one task (support_x [n, ...]); rates: alpha, or a tensor per parameter."""
    params = {n: p.detach().requires_grad_(True) for n, p in theta.items()}
    with torch.enable_grad():
        loss = learner.loss(learner.predict(params, support_x), support_y)
        gradients = torch.autograd.grad(loss, list(params.values()), create_graph=True)
    # Meta-SGD rates below zero (an ascent step) count as zero here.
    root = {n: torch.as_tensor(rates if isinstance(rates, float) else rates[n], dtype=p.dtype,
                               device=p.device).clamp(min=0).sqrt() for n, p in params.items()}

    def hessian_vector(v: Params) -> Params:
        scaled = [root[n] * v[n] for n in params]
        with torch.enable_grad():
            product = torch.autograd.grad(gradients, list(params.values()), scaled, retain_graph=True)
        return {n: root[n] * h.detach() for n, h in zip(params, product, strict=True)}

    return top_eigenvalue(hessian_vector, params, generator=generator)


def episode_curvatures(meta: MetaParams, learner: Learner, inner: InnerLoop, episode: Episode,
                       seed: int = 0) -> Tensor:
    """[2, B]: each task's step curvature at theta and after one inner step (Meta-SGD: its learned rates)."""
    rates = meta.get("learned_lr", inner.inner_lr)
    generator = torch.Generator().manual_seed(seed)
    columns = []
    for x, y in zip(episode.support_x, episode.support_y, strict=True):
        with torch.enable_grad():
            first_step = {n: p.detach() for n, p in adapt(meta, x, y, learner, inner, 1).items()}
        columns.append([step_curvature(learner, params, rates, x, y, generator) for params in (meta["theta"], first_step)])
    return torch.tensor(columns).T


def summarize_curvatures(curvatures, diverged) -> dict:
    """Quantiles of the step curvatures [E], and how well "above 2" predicts the episodes that diverged [E]."""
    curvatures, diverged = torch.as_tensor(curvatures, dtype=torch.float64), torch.as_tensor(diverged, dtype=torch.bool)
    unstable = curvatures > 2
    quantiles = torch.quantile(curvatures, torch.tensor([0.5, 0.9, 0.99, 1.0], dtype=torch.float64))
    return {"median": float(quantiles[0]), "p90": float(quantiles[1]), "p99": float(quantiles[2]),
            "max": float(quantiles[3]), "above_2": int(unstable.sum()),
            "above_2_and_diverged": int((unstable & diverged).sum()),
            "above_2_not_diverged": int((unstable & ~diverged).sum()),
            "at_most_2_but_diverged": int((~unstable & diverged).sum())}
