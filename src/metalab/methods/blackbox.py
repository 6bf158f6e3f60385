"""Black-box adaptation: phi = f_theta(D_tr) is computed by a network, not by optimization.

    adapt(meta, support_x, support_y) -> phi        the network reads the support set
    predict(meta, phi, query_x) -> prediction      [B, Q, out], from phi and each query alone
Both are pure functions of the explicit parameters meta["theta"] (torch.func.functional_call over the
learner's module, models/blackbox.py); theta is trained end to end on the query loss. Tasks are batched
in the tensors' first dimension.
"""

from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor
from torch.func import functional_call

from metalab.data.tasks import Episode
from metalab.errors import MetalabError
from metalab.methods.learner import Learner, Params, copy_parameters, score


def adapt(meta: dict[str, Params], support_x: Tensor, support_y: Tensor, learner: Learner):
    return functional_call(learner.model, meta["theta"], ("adapt", support_x, support_y))


def predict(meta: dict[str, Params], phi, query_x: Tensor, learner: Learner) -> Tensor:
    return functional_call(learner.model, meta["theta"], ("predict", phi, query_x))


def batch_loss(meta, episode, learner: Learner) -> tuple[Tensor, Tensor]:
    """Per-task query losses [B] and scores [B] of a batch of tasks (support_x [B, K, ...], ...)."""
    support_x, support_y, query_x, query_y = episode
    predictions = predict(meta, adapt(meta, support_x, support_y, learner), query_x, learner)
    losses = torch.stack([learner.loss(p, y) for p, y in zip(predictions, query_y)])
    scores = torch.stack([score(p, y, loss) for p, y, loss in zip(predictions, query_y, losses)])
    return losses, scores


@dataclass(frozen=True)
class BlackBoxMethod:
    """A black-box learner as the shared loop and evaluation use it (see methods/method.py)."""

    learner: Learner
    batching: str = "batched"  # the networks take every task of a batch at once
    eval_steps: int = 0  # no inner steps: one score per episode, after reading the support set
    embedding_from: str = ""  # a black-box checkpoint whose embedding (embed.*) starts this learner's

    def init_meta(self) -> dict[str, Params]:
        theta = copy_parameters(self.learner.model)
        if self.embedding_from:
            theta.update(embedding_of(self.embedding_from, theta))
        return {"theta": {name: p.requires_grad_(True) for name, p in theta.items()}}

    def task_loss(self, step: int):
        return partial(batch_loss, learner=self.learner)

    def scores(self, meta, episode: Episode, steps: int) -> Tensor:
        """[1, B]: each task's query score."""
        with torch.no_grad():
            return batch_loss(meta, tuple(episode), self.learner)[1].unsqueeze(0)


def embedding_of(path: str, theta: Params) -> Params:
    """The embedding parameters (embed.*) of the checkpoint at `path`, checked to fit `theta`'s."""
    from metalab.training import checkpoint  # the training package builds on methods: import when used

    wanted = {name: p.shape for name, p in theta.items() if name.startswith("embed.")}
    if not wanted:
        raise MetalabError("--embedding-from needs a learner with a trainable embedding; this one reads raw "
                           "pixels (use --embedding conv4)")
    source = checkpoint.load(path)["meta"]["theta"]
    found = {name: p.shape for name, p in source.items() if name.startswith("embed.")}
    if found != wanted:
        raise MetalabError(f"the embedding in {path} does not fit this learner's (parameters "
                           f"{sorted(found) or 'none'} vs {sorted(wanted)}); train both with the same "
                           "--embedding, --hidden and --pooling")
    return {name: source[name].detach().clone() for name in wanted}
