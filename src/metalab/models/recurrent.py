"""Black-box learners that read the support set as a sequence: an LSTM, and an LSTM with an external memory."""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalab.models.blackbox import BlackBox


class LSTMLearner(BlackBox):
    """The classic homework model: a 2-layer LSTM reads the support pairs (x, one-hot y) in order; phi is
    its state. Each query (x, zeros) is one more step from that state, so queries do not see each other.

    A learned embedding's features are standardized per dimension by the support set's mean and deviation
    (the queries' by the same support statistics, so still no query sees another). Without it the Conv4
    embedding, trained behind an LSTM that sits at the uniform-prediction plateau for its first steps,
    collapsed to image-independent features, after which no gradient reached it and the learner stayed at
    chance (docs/design.md). Raw pixels cannot collapse and pass unchanged, as in the homework.
    """

    def __init__(self, embed, embed_dim, label_dim, out_dim, classification, hidden=128, layers=2,
                 standardize=False):
        super().__init__(embed, embed_dim, label_dim, out_dim, classification)
        self.standardize = standardize
        self.lstm = nn.LSTM(embed_dim + label_dim, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, out_dim)

    def adapt(self, support_x, support_y):
        features = self.features(support_x)
        statistics = support_statistics(features) if self.standardize else None
        _, (h, c) = self.lstm(self.tokens_from(standardized(features, statistics), self.label_input(support_y)))
        return h, c, statistics  # [layers, B, hidden] each; ([B, 1, embed_dim] each) or None

    def predict(self, phi, query_x):
        h, c, statistics = phi
        batch, queries = query_x.shape[:2]
        tokens = self.tokens_from(standardized(self.features(query_x), statistics), None)
        tokens = tokens.flatten(0, 1).unsqueeze(1)  # [B*Q, 1, d]: one step per query
        state = (h.repeat_interleave(queries, dim=1), c.repeat_interleave(queries, dim=1))
        out, _ = self.lstm(tokens, state)
        return self.head(out[:, -1]).view(batch, queries, self.out_dim)


def support_statistics(features: Tensor) -> tuple[Tensor, Tensor]:
    """Support features [B, K, d] -> per-dimension mean and deviation over the K examples, [B, 1, d] each."""
    return features.mean(dim=1, keepdim=True), features.std(dim=1, keepdim=True, unbiased=False) + 1e-5


def standardized(features: Tensor, statistics: tuple[Tensor, Tensor] | None) -> Tensor:
    if statistics is None:
        return features
    mean, deviation = statistics
    return (features - mean) / deviation


KEY_STRENGTH = 10.0


class MANN(BlackBox):
    """Memory-augmented network (Santoro et al. 2016): an LSTM controller with an external memory.

    Each step the controller emits one key per read head. Writing (support steps only) goes to a mix of
    the previously read slots and the least-used slots, gated by a learned sigmoid(alpha) per head, after the
    least-used slot is cleared; reading is content-based (softmax of cosine similarity); usage decays by
    `gamma` and adds read and write weights. phi is the whole state after the support set; each query is one
    read-only step from it. A task's memory [B, slots, width] is shared by its R readers (1 while reading the
    support set, Q when predicting), whose controller states are [B, R, ...].
    """

    def __init__(self, embed, embed_dim, label_dim, out_dim, classification, hidden=200, slots=128, width=40,
                 heads=4, gamma=0.95):
        super().__init__(embed, embed_dim, label_dim, out_dim, classification)
        self.slots, self.width, self.heads, self.gamma = slots, width, heads, gamma
        self.controller = nn.LSTMCell(embed_dim + label_dim + heads * width, hidden)
        self.key = nn.Linear(hidden, heads * width)
        self.write_gate = nn.Parameter(torch.zeros(heads))  # alpha: sigmoid(alpha) = share of the last read slots
        # log of the key strength beta that sharpens cosine similarity before the softmax (as in the Neural Turing
        # Machine); Santoro et al. use beta = 1, with which the reads start nearly uniform over all slots
        self.log_key_strength = nn.Parameter(torch.tensor(math.log(KEY_STRENGTH)))
        self.head = nn.Linear(hidden + heads * width, out_dim)

    def initial_state(self, batch: int, like: Tensor) -> dict:
        hidden = self.controller.hidden_size
        return {"h": like.new_zeros(batch, 1, hidden), "c": like.new_zeros(batch, 1, hidden),
                "memory": like.new_full((batch, self.slots, self.width), 1e-6),
                "usage": like.new_zeros(batch, self.slots),
                "read_weights": like.new_zeros(batch, 1, self.heads, self.slots),
                "reads": like.new_zeros(batch, 1, self.heads * self.width)}

    def step(self, state: dict, tokens: Tensor, write: bool) -> dict:
        """One time step of every reader; tokens [B, R, d]. Writing needs R = 1."""
        batch, readers = tokens.shape[:2]
        inputs = torch.cat([tokens, state["reads"]], dim=-1).flatten(0, 1)
        h, c = self.controller(inputs, (state["h"].flatten(0, 1), state["c"].flatten(0, 1)))
        h, c = h.unflatten(0, (batch, readers)), c.unflatten(0, (batch, readers))
        keys = torch.tanh(self.key(h)).unflatten(-1, (self.heads, self.width))  # [B, R, heads, width]
        memory, usage = state["memory"], state["usage"]
        if write:
            least_used = self._least_used(usage, self.heads)  # [B, slots]: 1 on the `heads` least used slots
            gate = torch.sigmoid(self.write_gate).view(1, -1, 1)
            write_weights = gate * state["read_weights"][:, 0] + (1 - gate) * least_used.unsqueeze(1)  # [B, heads, slots]
            cleared = 1 - self._least_used(usage, 1)  # the least used slot is erased before writing
            memory = memory * cleared.unsqueeze(-1) + torch.einsum("bhs,bhw->bsw", write_weights, keys[:, 0])
        similarity = torch.einsum("brhw,bsw->brhs", F.normalize(keys, dim=-1, eps=1e-8),
                                  F.normalize(memory, dim=-1, eps=1e-8))  # cosine similarity
        read_weights = torch.softmax(self.log_key_strength.exp() * similarity, dim=-1)  # [B, R, heads, slots]
        reads = torch.einsum("brhs,bsw->brhw", read_weights, memory).flatten(2)
        if write:
            usage = self.gamma * usage + read_weights[:, 0].sum(1) + write_weights.sum(1)
        return {"h": h, "c": c, "memory": memory, "usage": usage, "read_weights": read_weights, "reads": reads}

    @staticmethod
    def _least_used(usage: Tensor, count: int) -> Tensor:
        slots = torch.topk(usage, count, dim=-1, largest=False).indices
        return torch.zeros_like(usage).scatter_(-1, slots, 1.0)

    def adapt(self, support_x, support_y):
        tokens = self.support_tokens(support_x, support_y)
        state = self.initial_state(tokens.shape[0], tokens)
        for t in range(tokens.shape[1]):
            state = self.step(state, tokens[:, t : t + 1], write=True)
        return state

    def predict(self, phi, query_x):
        queries = query_x.shape[1]
        readers = {name: phi[name].expand(-1, queries, *phi[name].shape[2:])
                   for name in ("h", "c", "read_weights", "reads")}  # each query reads from the same state
        state = self.step({**phi, **readers}, self.query_tokens(query_x), write=False)
        return self.head(torch.cat([state["h"], state["reads"]], dim=-1))
