"""Black-box meta-learners: networks that read a task's support set and predict its query labels.

Each splits into the two halves of the math, batched over tasks (tasks go in the batch dimension: vmap
has no batching rule for nn.LSTM):
    adapt(support_x, support_y) -> phi     phi summarizes D_tr (an LSTM state, a memory, an average h,
                                           or the support set's token states)
    predict(phi, query_x) -> prediction    [B, Q, out]: logits over the N ways, or regression outputs
`forward(stage, *inputs)` runs one half, so that torch.func.functional_call can run it over explicit
parameters (methods/blackbox.py). Every query is predicted from phi and its own input only: no query sees
its label or another query, which tests check.

Inputs: support_x [B, K, *x_shape]; support_y [B, K] class indices, or [B, K, dim] regression targets.
Classification labels enter as one-hot vectors; the query's label input is zeros.
"""
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalab.models.networks import image_body


class BlackBox(nn.Module):
    def __init__(self, embed: nn.Module, embed_dim: int, label_dim: int, out_dim: int, classification: bool):
        super().__init__()
        self.embed = embed  # one input [n, *x_shape] -> [n, embed_dim]; per example, no batch statistics
        self.label_dim, self.out_dim, self.classification = label_dim, out_dim, classification

    def forward(self, stage: str, *inputs):
        if stage == "adapt":
            return self.adapt(*inputs)
        if stage == "predict":
            return self.predict(*inputs)
        raise ValueError(f"stage must be 'adapt' or 'predict', got {stage!r}")

    def features(self, x: Tensor) -> Tensor:
        """[B, n, *x_shape] -> [B, n, embed_dim]"""
        return self.embed(x.flatten(0, 1)).unflatten(0, x.shape[:2])

    def label_input(self, y: Tensor) -> Tensor:
        """[B, n] class indices -> one-hot [B, n, N]; regression targets [B, n, dim] pass as they are."""
        return F.one_hot(y, self.label_dim).to(torch.get_default_dtype()) if self.classification else y

    def tokens_from(self, features: Tensor, labels: Tensor | None) -> Tensor:
        """features [B, n, embed_dim] and label inputs [B, n, label_dim] (None for queries: zeros)
        -> tokens [B, n, embed_dim + label_dim]"""
        if labels is None:
            labels = features.new_zeros(*features.shape[:2], self.label_dim)
        return torch.cat([features, labels.to(features.dtype)], dim=-1)

    def support_tokens(self, support_x, support_y) -> Tensor:
        return self.tokens_from(self.features(support_x), self.label_input(support_y))

    def query_tokens(self, query_x) -> Tensor:
        return self.tokens_from(self.features(query_x), None)


def embedding(kind: str, x_shape: tuple, hidden: int = 32, pooling: bool = False) -> tuple[nn.Module, int]:
    """The network that embeds one input, and its output size: 'conv4' or 'resnet12' (with per-image group
    norm), 'pixels' (raw, flattened) or 'mlp' (regression inputs: two ReLU layers of `hidden` units)."""
    if kind in ("conv4", "resnet12"):
        return image_body(kind, x_shape[0], hidden, pooling, x_shape[-1], norm="group")
    if kind == "pixels":
        return nn.Flatten(), math.prod(x_shape)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(x_shape[-1], hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()), hidden
    raise ValueError(f"unknown embedding {kind!r}; choose conv4, resnet12, pixels or mlp")
