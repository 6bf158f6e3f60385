"""Inner optimizers as small pure update rules, shared by the MAML family and fine-tuning.

Each takes a parameter tensor and its gradient (and its state, for Adam) and returns the new value; none
changes anything in place, so outer autograd differentiates through them (MAML's second-order terms).
"""

import torch
from torch import Tensor

from metalab.methods.learner import Params

ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8


def sgd(param: Tensor, gradient: Tensor, lr: float | Tensor) -> Tensor:
    """MAML's step; with lr a learned tensor (one rate per tensor or per element), Meta-SGD's."""
    return param - lr * gradient


def learned_update(param: Tensor, gradient: Tensor, lr: float, net: Params, progress: float) -> Tensor:
    """A gradient step plus U(gradient, parameter, progress): a coordinate-wise MLP shared by every parameter
    (Andrychowicz et al. 2016; Ravi & Larochelle 2017); progress = step / steps in [0, 1)."""
    flat = param.reshape(-1)
    features = torch.stack([gradient.reshape(-1), flat, torch.full_like(flat, progress)], dim=-1)  # [n, 3]
    correction = torch.tanh(features @ net["w1"].T + net["b1"]) @ net["w2"].T + net["b2"]
    return sgd(param, gradient, lr) + correction.view_as(param)


def adam(param: Tensor, gradient: Tensor, m: Tensor, v: Tensor, lr: float, t: int) -> tuple[Tensor, Tensor, Tensor]:
    """torch.optim.Adam's t-th update (t >= 1) op for op as its single-tensor path computes it, so the same
    numbers: (new param, new m, new v)."""
    (beta1, beta2) = ADAM_BETAS
    m = torch.lerp(m, gradient, 1 - beta1)
    v = (v * beta2).addcmul(gradient, gradient, value=1 - beta2)
    denominator = (v.sqrt() / (1 - beta2**t) ** 0.5).add(ADAM_EPS)
    return param.addcdiv(m, denominator, value=-(lr / (1 - beta1**t))), m, v
