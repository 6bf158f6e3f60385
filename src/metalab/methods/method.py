"""The one seam between the shared loop, evaluation and checkpoints, and every method.

A method is an object with these members; methods/registry.py maps a name to the function that builds one
from a Config and the Learner. Meta-parameters are groups of named tensors, {group: {name: tensor}}, with
meta["theta"] always one of them; everything else a method learns is another group (Meta-SGD's learned
rates, the learned update network), so checkpoints, optimizers and distribution treat every method alike.
"""

from typing import Protocol

from torch import Tensor

from metalab.data.episode import Episode
from metalab.methods.learner import Params

MetaParams = dict[str, Params]


class Method(Protocol):
    eval_steps: int  # adaptation steps at validation and by default at evaluation (0: none, one score row)
    step_name: str  # what a step of adaptation is, as printed ("inner steps"); "" when there are none

    def init_meta(self) -> MetaParams:
        """Fresh meta-parameters that require grad."""
        ...

    def meta_loss(self, meta: MetaParams, episode: Episode, step: int) -> tuple[Tensor, Tensor]:
        """(mean query loss over the episode's tasks, differentiable w.r.t. meta; mean score, detached) at
        meta-training step `step`, however the method batches tasks inside."""
        ...

    def scores(self, meta: MetaParams, episode: Episode, steps: int) -> Tensor:
        """[steps + 1, B] each task's query score after 0..steps adaptation steps, without gradients to meta;
        [1, B] for a method without steps."""
        ...

    def predictions(self, meta: MetaParams, episode: Episode, steps: int) -> Tensor:
        """[B, Q, outputs] each task's query predictions (class scores, or values for regression) after `steps`
        adaptation steps, without gradients to meta; a method without steps ignores `steps`. Scored by the
        learner's metric, they give `scores(meta, episode, steps)[-1]`."""
        ...
