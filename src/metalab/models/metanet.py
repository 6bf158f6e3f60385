"""Meta Networks (Munkhdalai & Yu, ICML 2017): fast weights generated from the loss gradients of the support set.

Two learners, each with slow weights (trained across tasks by the meta-gradient, here meta["theta"]):
- the base learner b: a body (self.embed) -> hidden layer W1 -> output layer W2;
- the meta learner: the representation function u: a body -> layer Q; and the fast-weight generators
  m (slow weights Z, example level) and d (slow weights G, task level).
A task (the paper's Algorithm 1, with T = the whole support set):
1. task-level fast weights: for each support example i, the representation loss
   loss_emb(head(u(Q, x'_i)), y'_i) and its gradient with respect to Q; Q* = d(G, {grad_i}), d an LSTM that
   reads the K gradients in order, one coordinate at a time (as a weight-sharing optimizer network does);
2. example-level fast weights: for each support example, the task loss of b with slow weights only,
   loss(b(W, x'_i), y'_i), and its gradient with respect to W = (W1, W2); W*_i = m(Z, grad_i), m a
   3-layer MLP of 20 units applied per coordinate. Memory M = {W*_i}; index R = {r'_i = u(Q, Q*, x'_i)};
3. a query x: r = u(Q, Q*, x); a = softmax(beta * cosine(r, R)) over the support set; W* = sum_i a_i W*_i;
   the prediction is b(W, W*, x).
Meta information (the gradients) enters m and d preprocessed as in Andrychowicz et al. (2016), each coordinate
g as (log|g| / p, sign g) if |g| >= e^-p, else (-1, e^p g), with p = 10.
Layer augmentation: an augmented layer computes relu(slow(x)) + relu(fast(x)) (the output layer: slow(x) +
fast(x), before the softmax). Q, W1 and W2 are augmented; the bodies are slow only.
Per-example gradients are taken inside the forward pass with torch.func (grad, vmap over examples and tasks):
they stay functions of the slow weights, so the query loss trains everything end to end through them.

What differs from the paper (whose code is Chainer): the fast weights augment the last layers (u's top layer, both
of b's layers), not every layer of the two CNNs; the representation loss is the cross-entropy (or MSE) of a slow
linear head on u, over all K support examples (the paper samples T of them); the attention's cosine similarity is
multiplied by a learned beta (starting at 10) before the softmax, where the paper uses the plain cosine, whose
softmax over 5 items in [-1, 1] can barely single one out; the bodies are metalab's Conv4 (group norm) or sinusoid
MLP; u's features are standardized per dimension by the support set's statistics (the queries' by the same), and in
classification b's are centred on the support set's mean. Two reasons: per-image group norm leaves different images'
Conv4 features nearly parallel at initialization (models/snail.py), which would give the cosine attention little to
choose by; and features that are never negative (an MLP's or raw pixels) under a Q* whose entries all have one sign,
as d's first outputs can, make relu(Q* h) zero for every input, so the task-level fast weights would neither act nor
learn. The same holds in b: m gives the many near-zero gradient coordinates one common value, so W1*'s entries can
share a sign, and under features that are never negative (the bodies end in a ReLU) relu(W1* h) is then zero for
every input; with some initializations the slow layer died too within a few steps and training sat at chance.
Centring alone, not dividing by the deviations of a few support examples, keeps the features' scale. A class is
defined only relative to the support set, so centring hides nothing a classifier needs; a regression target depends
on where x is, so b's regression features are left as they are.
"""

import math

import torch
from torch import Tensor, nn
from torch.func import grad, vmap

from metalab.models.blackbox import BlackBox
from metalab.models.recurrent import standardized, support_statistics

PREPROCESSING_P = 10.0
ATTENTION_SHARPNESS = 10.0


def preprocessed(gradient: Tensor, p: float = PREPROCESSING_P) -> Tensor:
    """[...] gradient coordinates -> [..., 2]: (log|g| / p, sign g) where |g| >= e^-p, else (-1, e^p g)."""
    large = gradient.abs() >= math.exp(-p)
    magnitude = torch.where(large, gradient.abs().clamp_min(math.exp(-p)).log() / p, -torch.ones_like(gradient))
    direction = torch.where(large, torch.sign(gradient), math.exp(p) * gradient)
    return torch.stack([magnitude, direction], dim=-1)


class MetaNetwork(BlackBox):
    def __init__(self, embed, embed_dim, label_dim, out_dim, classification, represent: nn.Module,
                 represent_dim: int, hidden: int = 64, meta_hidden: int = 20):
        super().__init__(embed, embed_dim, label_dim, out_dim, classification)
        self.represent = represent  # u's body: one input [n, *x_shape] -> [n, represent_dim]
        self.q = nn.Linear(represent_dim, hidden)  # u's augmented layer (slow Q)
        self.representation_head = nn.Linear(hidden, out_dim)  # for loss_emb, u's meta information
        self.w1, self.w2 = nn.Linear(embed_dim, hidden), nn.Linear(hidden, out_dim)  # b's augmented layers
        self.m = nn.Sequential(nn.Linear(2, meta_hidden), nn.ReLU(), nn.Linear(meta_hidden, meta_hidden), nn.ReLU(),
                               nn.Linear(meta_hidden, 1))
        self.d = nn.LSTMCell(2, meta_hidden)
        self.d_out = nn.Linear(meta_hidden, 1)
        self.log_sharpness = nn.Parameter(torch.tensor(math.log(ATTENTION_SHARPNESS)))

    def example_loss(self, output: Tensor, target: Tensor) -> Tensor:
        """One example's loss: output [out]; target one-hot [N] (cross-entropy) or [dim] (squared error)."""
        if self.classification:
            return -(torch.log_softmax(output, dim=-1) * target).sum()
        return ((output - target) ** 2).mean()

    def per_example_gradients(self, loss_of, weights: tuple, inputs: Tensor, targets: Tensor) -> tuple:
        """d loss_of(weights, input, target) / d weights for every example: inputs [B, K, ...] -> each [B, K, *w]."""
        return vmap(vmap(grad(loss_of), in_dims=(None, 0, 0)), in_dims=(None, 0, 0))(weights, inputs, targets)

    def represent_with(self, body: Tensor, fast_q: Tensor | None) -> Tensor:
        """u's augmented layer: body features [B, n, represent_dim], Q* [B, hidden, represent_dim] or None."""
        slow = torch.relu(self.q(body))
        return slow if fast_q is None else slow + torch.relu(torch.einsum("bhr,bnr->bnh", fast_q, body))

    def adapt(self, support_x, support_y):
        targets = self.label_input(support_y).to(support_x.dtype)  # [B, K, N] one-hot or [B, K, dim]
        body = self.represent(support_x.flatten(0, 1)).unflatten(0, support_x.shape[:2])
        statistics = support_statistics(body)
        body = standardized(body, statistics)
        # 1. task-level fast weights Q* from the representation loss's gradients, read in order by the LSTM d
        def representation_loss(w, features, target):
            return self.example_loss(self.representation_head(torch.relu(features @ w[0].T + self.q.bias)), target)

        (q_gradients,) = self.per_example_gradients(representation_loss, (self.q.weight,), body, targets)
        fast_q = self.task_fast_weights(q_gradients)
        # 2. example-level fast weights W*_i from the base learner's gradients
        features = self.features(support_x)
        feature_mean = features.mean(dim=1, keepdim=True)  # [B, 1, embed_dim]
        if not self.classification:
            feature_mean = torch.zeros_like(feature_mean)
        features = features - feature_mean

        def task_loss(w, feature, target):
            return self.example_loss(torch.relu(feature @ w[0].T + self.w1.bias) @ w[1].T + self.w2.bias, target)

        gradients = self.per_example_gradients(task_loss, (self.w1.weight, self.w2.weight), features, targets)
        memory = tuple(self.m(preprocessed(g).flatten(0, -2)).view_as(g) for g in gradients)  # [B, K, *w] each
        # Q*; index R [B, K, hidden]; memory M; the support's statistics
        return fast_q, self.represent_with(body, fast_q), memory, statistics, feature_mean

    def task_fast_weights(self, gradients: Tensor) -> Tensor:
        """Per-example gradients [B, K, *q] -> Q* [B, *q]: the LSTM d reads each coordinate's K gradients."""
        inputs = preprocessed(gradients).movedim(1, 0).flatten(1, -2)  # [K, B * coordinates, 2]
        h = c = inputs.new_zeros(inputs.shape[1], self.d.hidden_size)
        for step in inputs:
            h, c = self.d(step, (h, c))
        return self.d_out(h).view(gradients.shape[:1] + gradients.shape[2:])

    def predict(self, phi, query_x):
        fast_q, index, (memory_w1, memory_w2), statistics, feature_mean = phi
        body = standardized(self.represent(query_x.flatten(0, 1)).unflatten(0, query_x.shape[:2]), statistics)
        r = self.represent_with(body, fast_q)  # [B, Q, hidden]
        similarity = nn.functional.cosine_similarity(r.unsqueeze(2), index.unsqueeze(1), dim=-1, eps=1e-8)
        attention = torch.softmax(self.log_sharpness.exp() * similarity, dim=-1)  # [B, Q, K]
        fast_w1 = torch.einsum("bqk,bkhe->bqhe", attention, memory_w1)
        fast_w2 = torch.einsum("bqk,bkoh->bqoh", attention, memory_w2)
        features = self.features(query_x) - feature_mean  # [B, Q, embed_dim]
        hidden = torch.relu(self.w1(features)) + torch.relu(torch.einsum("bqhe,bqe->bqh", fast_w1, features))
        return self.w2(hidden) + torch.einsum("bqoh,bqh->bqo", fast_w2, hidden)
