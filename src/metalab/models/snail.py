"""SNAIL (Mishra et al., ICLR 2018, "A Simple Neural Attentive Meta-Learner"): the episode as one sequence.

The sequence is the support items (embedding e(x), one-hot label or y), in the order given, then a query
(e(x), zeros); the prediction for the query is read at its position. Omniglot model of the paper, with T =
support size + 1:

    Attention(key 64, value 32) -> TC(T, 128) -> Attention(256, 128) -> TC(T, 128) -> Attention(512, 256)
    -> a linear layer per position (the paper's 1x1 convolution) to the outputs

Every block concatenates its output to its input, so the width grows from e + labels to e + labels + 1248.
- Dense block (dilation R, D filters): two causal convolutions of kernel 2 and dilation R, a and b, each
  output[t] = W_now x[t] + W_past x[t - R] + bias (x[t - R] = 0 before the start), combined as
  tanh(a) * sigmoid(b) [D].
- TC block: ceil(log2 T) dense blocks. Dilations 2, 4, ..., 2^ceil(log2 T): the paper's pseudocode
  (appendix) calls DenseBlock(inputs, 2^i, D) for i = 1, ..., ceil(log2 T), so the first dilation is 2,
  not 1 as in some ports. A convolution alone then never reaches an odd offset; the attention blocks
  between the TC blocks reach every past item, which is the paper's division of labour.
- Attention block (key K, value V): keys, queries, values are linear maps of each item; the weights of
  item t are softmax over the past items s <= t (the last axis: each row, one query's weights over the
  keys, sums to 1) of q_t . k_s / sqrt(K); the read is their mix of values [V].

Queries. The paper reads one query per sequence. Here all of a task's queries are read in one pass, each at
position T (right after the support set) with its own sequence: a query's dense blocks read the support
item R back (position T - R) and itself, its attention reads the support items and itself, never another
query. `adapt` runs the support items causally and keeps each block's input over the support set (phi);
`predict` runs each query through the blocks against those. tests/test_snail.py checks that this equals one
pass per query of `sequence` (support + that query).

Differences from the paper: the Conv4 embedding normalizes each image with group norm and uses ReLU
(metalab's black-box embedding; the paper: batch norm, leaky ReLU), and its features are standardized per
dimension by the support set's mean and deviation (the queries' by the same support statistics, so no query
sees another). The paper's batch norm spreads the features of a batch's images apart; group norm alone does
not: at initialization the images' features had cosine similarity 0.95, and the learner sat at the
uniform-prediction plateau (loss ln 5, gradient norm falling) for its first 200 steps, as the Conv4 LSTM did
(docs/design.md). For sinusoids the items are an MLP embedding of x, unstandardized, and the real y.
"""

import math

import torch
from torch import Tensor, nn

from metalab.models.blackbox import BlackBox
from metalab.models.recurrent import standardized, support_statistics


class SNAIL(BlackBox):
    def __init__(self, embed, embed_dim, label_dim, out_dim, classification, sequence_length: int,
                 filters: int = 128, attention=((64, 32), (256, 128), (512, 256)), standardize: bool = False):
        super().__init__(embed, embed_dim, label_dim, out_dim, classification)
        self.standardize = standardize
        if sequence_length < 2:
            raise ValueError(f"SNAIL needs a sequence of at least 2 items (support + query), got {sequence_length}")
        dilations = [2**i for i in range(1, math.ceil(math.log2(sequence_length)) + 1)]
        width, blocks = embed_dim + label_dim, []
        for i, (key, value) in enumerate(attention):
            if i > 0:  # a TC block between two attention blocks
                for dilation in dilations:
                    blocks.append(DenseBlock(width, filters, dilation))
                    width += filters
            blocks.append(AttentionBlock(width, key, value))
            width += value
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(width, out_dim)

    def sequence(self, tokens: Tensor) -> Tensor:
        """The paper's computation: items [B, T, d] -> outputs at every position [B, T, out], causally."""
        for block in self.blocks:
            tokens = block.sequence(tokens)
        return self.head(tokens)

    def episode_tokens(self, support_x, support_y, query_x) -> tuple[Tensor, Tensor, tuple | None]:
        """The items: support [B, K, d] (features, labels), queries [B, Q, d] (features, zeros), and the
        support set's feature statistics that standardized both (None without standardization)."""
        features = self.features(support_x)
        statistics = support_statistics(features) if self.standardize else None
        support = self.tokens_from(standardized(features, statistics), self.label_input(support_y))
        if query_x is None:
            return support, None, statistics
        return support, self.tokens_from(standardized(self.features(query_x), statistics), None), statistics

    def adapt(self, support_x, support_y):
        x, _, statistics = self.episode_tokens(support_x, support_y, None)
        inputs = []
        for block in self.blocks:
            inputs.append(x)
            x = block.sequence(x)
        return inputs, statistics  # each block's input over the support set [B, K, its width]; statistics

    def predict(self, phi, query_x):
        inputs, statistics = phi
        x = self.tokens_from(standardized(self.features(query_x), statistics), None)  # [B, Q, d], each at position K
        for block, support in zip(self.blocks, inputs, strict=True):
            x = block.query(x, support)
        return self.head(x)


class DenseBlock(nn.Module):
    """Causal convolution pair (kernel 2, dilation R) -> tanh(a) * sigmoid(b), concatenated to the input."""

    def __init__(self, width: int, filters: int, dilation: int):
        super().__init__()
        self.dilation = dilation
        self.now = nn.Linear(width, 2 * filters)  # the kernel's tap on x[t] (a and b together), with the biases
        self.past = nn.Linear(width, 2 * filters, bias=False)  # its tap on x[t - R]

    def _gated(self, x: Tensor, past: Tensor) -> Tensor:
        a, b = (self.now(x) + self.past(past)).chunk(2, dim=-1)
        return torch.cat([x, torch.tanh(a) * torch.sigmoid(b)], dim=-1)

    def sequence(self, x: Tensor) -> Tensor:
        """x [B, T, d] -> [B, T, d + filters]; item t reads items t and t - R."""
        length = x.shape[1]
        shift = min(self.dilation, length)
        past = torch.cat([x.new_zeros(x.shape[0], shift, x.shape[2]), x[:, : length - shift]], dim=1)
        return self._gated(x, past)

    def query(self, x: Tensor, support: Tensor) -> Tensor:
        """x [B, Q, d], each query at position K after the support items [B, K, d]: reads support item K - R."""
        position = support.shape[1] - self.dilation
        past = support[:, position : position + 1].expand_as(x) if position >= 0 else torch.zeros_like(x)
        return self._gated(x, past)


class AttentionBlock(nn.Module):
    """Causal single-head soft attention (key K, value V), its read concatenated to the input."""

    def __init__(self, width: int, key: int, value: int):
        super().__init__()
        self.key, self.query_map, self.value = nn.Linear(width, key), nn.Linear(width, key), nn.Linear(width, value)
        self.scale = 1 / math.sqrt(key)

    def sequence(self, x: Tensor) -> Tensor:
        """x [B, T, d] -> [B, T, d + V]; item t attends to items 0..t."""
        logits = self.query_map(x) @ self.key(x).transpose(1, 2) * self.scale  # [B, T (queries), T (keys)]
        future = torch.ones(x.shape[1], x.shape[1], dtype=torch.bool, device=x.device).triu(1)
        weights = torch.softmax(logits.masked_fill(future, float("-inf")), dim=-1)  # over the keys of each row
        return torch.cat([x, weights @ self.value(x)], dim=-1)

    def query(self, x: Tensor, support: Tensor) -> Tensor:
        """x [B, Q, d], each query at position K: attends to the K support items [B, K, d] and to itself."""
        q = self.query_map(x)
        to_support = q @ self.key(support).transpose(1, 2)  # [B, Q, K]
        to_itself = (q * self.key(x)).sum(-1, keepdim=True)  # [B, Q, 1]
        weights = torch.softmax(torch.cat([to_support, to_itself], dim=-1) * self.scale, dim=-1)
        read = weights[..., :-1] @ self.value(support) + weights[..., -1:] * self.value(x)
        return torch.cat([x, read], dim=-1)
