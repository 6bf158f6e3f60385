"""The one interface the shared meta-training loop, evaluation and checkpoints need from a method.

Optimization-based methods (methods/optimization.py: GradientMethod) and black-box learners
(methods/blackbox.py: BlackBoxMethod) both provide it; `make_method` picks one from a Config.
"""

from typing import Callable, Protocol

from torch import Tensor

from metalab.config import BLACK_BOX_METHODS, Config
from metalab.data.tasks import Episode
from metalab.methods.blackbox import BlackBoxMethod
from metalab.methods.learner import Learner, Params
from metalab.methods.optimization import GradientMethod, InnerLoop


class Method(Protocol):
    batching: str  # how training/meta_step.py runs task_loss over a batch: "loop", "vmap" or "batched"
    eval_steps: int  # inner steps at validation (0 for black-box learners)

    def init_meta(self) -> dict[str, Params]:
        """Fresh meta-parameters: groups of named tensors that require grad; meta["theta"] is always one."""
        ...

    def task_loss(self, step: int) -> Callable:
        """For meta-training step `step`: `task_loss(meta, task) -> (loss, score)` for one task, or per-task
        [B] losses and scores of a whole batch when batching is "batched"."""
        ...

    def scores(self, meta, episode: Episode, steps: int) -> Tensor:
        """[rows, B] held-out scores, without gradients: after 0..steps inner steps (rows = steps + 1), or a
        single row for methods without inner steps."""
        ...


def make_method(config: Config, learner: Learner) -> Method:
    if config.method in BLACK_BOX_METHODS:
        return BlackBoxMethod(learner, embedding_from=config.embedding_from)
    return GradientMethod(learner, InnerLoop(config.method, config.inner_lr, config.lr_shape),
                          train_steps=config.inner_steps, eval_steps=config.eval_inner_steps,
                          first_order_warmup=config.first_order_warmup, batching=config.task_batching)
