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

from metalab.config import BLACK_BOX_METHODS
from metalab.models.networks import conv4_body


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


class LSTMLearner(BlackBox):
    """The classic homework model: a 2-layer LSTM reads the support pairs (x, one-hot y) in order; phi is
    its state. Each query (x, zeros) is one more step from that state, so queries do not see each other.

    A learned embedding's features are standardized per dimension by the support set's mean and deviation
    (the queries' by the same support statistics, so still no query sees another). Without it the Conv4
    embedding, trained behind an LSTM that sits at the uniform-prediction plateau for its first thousand or
    so steps, collapsed to image-independent features (after 2,000 steps: deviation across images 0.008,
    cosine between images 0.9997), after which no gradient reached it and the learner stayed at chance.
    Raw pixels cannot collapse and pass unchanged, as in the homework.
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


def blackbox_model(method: str, x_shape: tuple, label_dim: int, out_dim: int, classification: bool,
                   embedding: str = "conv4", hidden: int = 32, pooling: bool = False, width: int = 128,
                   layers: int = 2, memory_slots: int = 128) -> BlackBox:
    """The black-box learner `method` over inputs of shape x_shape, with its embedding of one input:
    'conv4' (Conv4 with per-image group norm), 'pixels' (raw, flattened) or 'mlp' (regression inputs)."""
    if embedding == "conv4":
        embed, embed_dim = conv4_body(x_shape[0], hidden, pooling, x_shape[-1], norm="group")
    elif embedding == "pixels":
        embed, embed_dim = nn.Flatten(), math.prod(x_shape)
    elif embedding == "mlp":
        embed = nn.Sequential(nn.Linear(x_shape[-1], 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU())
        embed_dim = 40
    else:
        raise ValueError(f"unknown embedding {embedding!r}; choose conv4, pixels or mlp")
    args = (embed, embed_dim, label_dim, out_dim, classification)
    if method == "lstm":
        return LSTMLearner(*args, hidden=width, layers=layers, standardize=embedding == "conv4")
    if method == "mann":
        return MANN(*args, hidden=width, slots=memory_slots)
    if method == "average":
        return AverageLearner(*args, hidden=width)
    if method == "attention":
        return AttentionLearner(*args, hidden=width, layers=layers)
    raise ValueError(f"unknown black-box method {method!r}; choose one of {BLACK_BOX_METHODS}")
