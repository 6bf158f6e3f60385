"""Black-box learners that read the support set as a set: an average of encoded pairs, and attention."""

import math

import torch
from torch import Tensor, nn

from metalab.models.blackbox import BlackBox


class AverageLearner(BlackBox):
    """Feedforward + average: encode each support pair, average the encodings into h (invariant to the
    order of the support set by construction), predict each query from (its embedding, h).

    Classification: a pair's encoding is f(x) placed in the slot of its label (one-hot(y) outer f(x)), so
    h [B, N, width] holds one average per class, and a shared scorer rates each class from
    (f(query), N * h_n, their product); regression: h = mean of MLP([e(x), y]) and an MLP maps
    (e(query), h) to the output.
    """

    def __init__(self, embed, embed_dim, label_dim, out_dim, classification, hidden=128):
        super().__init__(embed, embed_dim, label_dim, out_dim, classification)
        if classification:
            self.encode = nn.Sequential(nn.Linear(embed_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
            self.score = nn.Sequential(nn.Linear(3 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        else:
            self.encode = nn.Sequential(nn.Linear(embed_dim + label_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
            self.score = nn.Sequential(nn.Linear(embed_dim + hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                       nn.ReLU(), nn.Linear(hidden, out_dim))

    def adapt(self, support_x, support_y):
        if not self.classification:
            return self.encode(self.support_tokens(support_x, support_y)).mean(dim=1)  # [B, hidden]
        pairs = self.label_input(support_y).unsqueeze(-1) * self.encode(self.features(support_x)).unsqueeze(2)
        return pairs.mean(dim=1)  # [B, N, hidden]

    def predict(self, phi, query_x):
        features = self.features(query_x)
        if not self.classification:
            return self.score(torch.cat([features, phi.unsqueeze(1).expand(-1, features.shape[1], -1)], dim=-1))
        query = self.encode(features).unsqueeze(2)  # [B, Q, 1, hidden]
        classes = (self.label_dim * phi).unsqueeze(1).expand(-1, query.shape[1], -1, -1)  # [B, Q, N, hidden]
        query = query.expand_as(classes)
        return self.score(torch.cat([query, classes, query * classes], dim=-1)).squeeze(-1)  # [B, Q, N]


class AttentionLearner(BlackBox):
    """A transformer over the support set with one token per query, read out through attention to labels.

    Support tokens (e(x), one-hot y) attend to each other; each query token (e(x), zeros) attends to the
    support tokens of its layer only (its own features pass by the residual path): no query sees another
    query. The masking is built into the computation: phi holds the support set's token states at every
    layer, which do not depend on the queries. The output adds to a linear head a label readout: one more
    attention of each query over the support set whose values are the support labels (one-hot, or y), so
    the gradient reaches "find the similar support example" directly; without it the model sat at chance
    for the first 1,200 steps here.
    """

    def __init__(self, embed, embed_dim, label_dim, out_dim, classification, hidden=128, layers=2, heads=4):
        super().__init__(embed, embed_dim, label_dim, out_dim, classification)
        if hidden % heads:
            raise ValueError(f"attention width {hidden} must be a multiple of the {heads} heads")
        self.heads = heads
        self.tokens = nn.Linear(embed_dim + label_dim, hidden)
        self.blocks = nn.ModuleList(_Block(hidden) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, out_dim)
        self.readout_query, self.readout_key = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        # the readout's weight, used times 10 so that Adam's steps move it at a useful rate; classification starts
        # with a confident vote (10), regression with none (the head alone)
        self.readout_scale = nn.Parameter(torch.tensor(1.0 if classification else 0.0))

    def adapt(self, support_x, support_y):
        states = [self.tokens(self.support_tokens(support_x, support_y))]
        for block in self.blocks:
            states.append(block(states[-1], self._attend(block, states[-1], states[-1])))
        return states, self.label_input(support_y).to(states[0].dtype)  # per layer [B, K, hidden]; [B, K, labels]

    def predict(self, phi, query_x):
        states, labels = phi
        x = self.tokens(self.query_tokens(query_x))
        for block, support in zip(self.blocks, states):
            x = block(x, self._attend(block, x, support))
        x = self.norm(x)
        keys = self.readout_key(self.norm(states[-1]))
        weights = torch.softmax(self.readout_query(x) @ keys.transpose(-1, -2) / math.sqrt(x.shape[-1]), dim=-1)
        return self.head(x) + self.readout_scale * 10 * (weights @ labels)

    def _attend(self, block, x: Tensor, context: Tensor) -> Tensor:
        """Multi-head attention of x [B, m, d] over context [B, n, d]."""
        split = lambda t: t.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # [B, heads, len, d_head]
        q = split(block.query(block.norm1(x)))
        k, v = split(block.key(block.norm1(context))), split(block.value(block.norm1(context)))
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)  # [B, heads, m, n]
        return block.out((weights @ v).transpose(1, 2).flatten(2))


class _Block(nn.Module):
    """Pre-norm transformer block: x + attention, then + MLP. Attention is computed by the learner."""

    def __init__(self, hidden: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.query, self.key, self.value, self.out = (nn.Linear(hidden, hidden) for _ in range(4))
        self.mlp = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.GELU(), nn.Linear(2 * hidden, hidden))

    def forward(self, x, attended):
        x = x + attended
        return x + self.mlp(self.norm2(x))
