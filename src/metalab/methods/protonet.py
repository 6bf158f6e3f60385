"""Prototypical networks (Snell, Swersky & Zemel 2017): a class is the mean of its support embeddings.

    c_k = mean of f_theta(x) over the support examples of class k        prototypes [B, N, D]
    logit_k(q) = -||f_theta(q) - c_k||^2                                logits [B, Q, N]
trained end to end on the cross-entropy of the query logits. Nothing is adapted per task (eval_steps 0): the
prototypes are a closed-form function of the support set.

The embedding f_theta is Conv4 with per-image group norm, the black-box learners' (models/blackbox.py), not the
paper's batch norm over the episode. With batch norm a query's embedding, hence its prediction, would depend on
the other queries of its episode and on how many there are; per-image norm makes every prediction a function of
the support set and that query alone (tests check it), keeps the embedding identical however many ways or
queries an episode has (so a model trained at 20 or 60 ways serves 5-way tasks without a shift in normalization
statistics), and makes the comparison with the `average` learner one of heads on the same embedding. Its
parameters are named embed.* as theirs are, and none depends on the number of ways.
"""

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

from metalab.config import Config
from metalab.data.episode import Episode
from metalab.errors import MetalabError
from metalab.methods.learner import Learner, Params, copy_parameters
from metalab.methods.method import MetaParams
from metalab.models.networks import image_body


def embedding_network(config: Config, x_shape: tuple, outputs: int) -> nn.Module:
    """The network problem.py gives a prototypical network: images [n, C, S, S] -> embeddings [n, D]."""
    if len(x_shape) != 3:
        raise MetalabError("protonet classifies images by their nearest class mean; use --problem omniglot")
    body, _ = image_body(config.embedding, x_shape[0], config.hidden, config.pooling, x_shape[-1], norm="group")
    return nn.Sequential(OrderedDict(embed=body))


def prototype_logits(model: nn.Module, theta: Params, episode: Episode) -> Tensor:
    """logits [B, Q, N] of every query of every task: minus its squared distance to each class's prototype. N is
    read from the support labels (0..N-1, each present), so one model serves episodes of any number of ways."""
    support_x, support_y, query_x, _ = episode
    tasks, support = support_x.shape[:2]
    ways = int(support_y.max()) + 1
    # One call over every image of the batch: per-image norm makes that exactly the per-task embeddings.
    embeddings = functional_call(model, theta, (torch.cat([support_x, query_x], 1).flatten(0, 1),))
    embeddings = embeddings.unflatten(0, (tasks, -1))  # [B, K + Q, D]
    support_z, query_z = embeddings[:, :support], embeddings[:, support:]
    members = (support_y.unsqueeze(-1) == torch.arange(ways, device=support_y.device)).to(support_z.dtype)
    prototypes = members.transpose(1, 2) @ support_z / members.sum(1).unsqueeze(-1)  # [B, N, D]
    # |q - c|^2 written out rather than torch.cdist, whose gradient at zero distance is not finite
    return -((query_z.unsqueeze(2) - prototypes.unsqueeze(1)) ** 2).sum(-1)


@dataclass(frozen=True)
class PrototypicalNetwork:
    """Prototypical networks on the one seam (methods/method.py)."""

    learner: Learner  # its model is embedding_network's
    eval_steps: int = 0  # nothing is adapted: one score per episode
    step_name: str = ""

    @classmethod
    def from_config(cls, config: Config, learner: Learner) -> "PrototypicalNetwork":
        if config.embedding_from:
            raise MetalabError("--embedding-from warm-starts a black-box learner's embedding; protonet trains its own")
        return cls(learner)

    def init_meta(self) -> MetaParams:
        return {"theta": {name: p.requires_grad_(True) for name, p in copy_parameters(self.learner.model).items()}}

    def task_losses(self, meta: MetaParams, episode: Episode) -> tuple[Tensor, Tensor]:
        """Per-task query losses [B] and scores [B]."""
        logits = prototype_logits(self.learner.model, meta["theta"], episode)
        return self.learner.task_losses(logits, episode.query_y)

    def meta_loss(self, meta: MetaParams, episode: Episode, step: int) -> tuple[Tensor, Tensor]:
        losses, scores = self.task_losses(meta, episode)
        return losses.mean(), scores.mean()

    def scores(self, meta: MetaParams, episode: Episode, steps: int) -> Tensor:
        with torch.no_grad():
            return self.task_losses(meta, episode)[1].unsqueeze(0)

    def predictions(self, meta: MetaParams, episode: Episode, steps: int) -> Tensor:
        with torch.no_grad():
            return prototype_logits(self.learner.model, meta["theta"], episode)
