"""Black-box adaptation: phi = f_theta(D_tr) is computed by a network, not by optimization.

    adapt(meta, support_x, support_y) -> phi        the network reads the support set
    predict(meta, phi, query_x) -> prediction      [B, Q, out], from phi and each query alone
Both are pure functions of the explicit parameters meta["theta"] (torch.func.functional_call over the
learner's module, models/blackbox.py); theta is trained end to end on the query loss. The networks take every
task of a batch at once, in the tensors' first dimension (vmap has no batching rule for nn.LSTM).
"""

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import functional_call

from metalab import checkpoint
from metalab.config import Config
from metalab.data.episode import Episode
from metalab.errors import MetalabError
from metalab.methods.learner import Learner, Params, copy_parameters
from metalab.methods.method import MetaParams


def adapt(meta: MetaParams, support_x: Tensor, support_y: Tensor, learner: Learner):
    return functional_call(learner.model, meta["theta"], ("adapt", support_x, support_y))


def predict(meta: MetaParams, phi, query_x: Tensor, learner: Learner) -> Tensor:
    return functional_call(learner.model, meta["theta"], ("predict", phi, query_x))


def batch_predictions(meta: MetaParams, episode: Episode, learner: Learner) -> Tensor:
    """[B, Q, out] the query predictions of a batch of tasks (support_x [B, K, ...], ...)."""
    support_x, support_y, query_x, _ = episode
    return predict(meta, adapt(meta, support_x, support_y, learner), query_x, learner)


def batch_loss(meta: MetaParams, episode: Episode, learner: Learner) -> tuple[Tensor, Tensor]:
    """Per-task query losses [B] and scores [B] of a batch of tasks."""
    query_y = episode[3]
    return learner.task_losses(batch_predictions(meta, episode, learner), query_y)


@dataclass(frozen=True)
class BlackBoxMethod:
    """A black-box learner on the one seam (methods/method.py)."""

    learner: Learner
    embedding_from: str = ""  # a black-box checkpoint whose embedding (embed.*) starts this learner's
    eval_steps: int = 0  # no steps: one score per episode, after reading the support set
    step_name: str = ""

    @classmethod
    def from_config(cls, config: Config, learner: Learner) -> "BlackBoxMethod":
        return cls(learner, embedding_from=config.embedding_from)

    def init_meta(self) -> MetaParams:
        theta = copy_parameters(self.learner.model)
        if self.embedding_from:
            theta.update(embedding_of(self.embedding_from, theta))
        return {"theta": {name: p.requires_grad_(True) for name, p in theta.items()}}

    def meta_loss(self, meta: MetaParams, episode: Episode, step: int) -> tuple[Tensor, Tensor]:
        losses, scores = batch_loss(meta, episode, self.learner)
        return losses.mean(), scores.mean()

    def scores(self, meta: MetaParams, episode: Episode, steps: int) -> Tensor:
        with torch.no_grad():
            return batch_loss(meta, episode, self.learner)[1].unsqueeze(0)

    def predictions(self, meta: MetaParams, episode: Episode, steps: int) -> Tensor:
        with torch.no_grad():
            return batch_predictions(meta, episode, self.learner)


def embedding_of(path: str, theta: Params) -> Params:
    """The embedding parameters (embed.*) of the checkpoint at `path`, checked to fit `theta`'s."""
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
