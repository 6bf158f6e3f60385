"""Fine-tuning, the baseline every meta-learner must beat: per task, start from weights learned without
meta-learning (or a MAML theta, or random weights), put a head on them (methods/heads.py) and train on the
support set only.

Training: `steps` steps of SGD or Adam (methods/update_rules.py) on the support loss. The head learns at head_lr,
the body block d blocks below the top one at body_lr * layer_decay**d. The first freeze_blocks blocks never
change; with unfreeze_every = G the head trains alone for G steps, then one more block, top down, joins every
G steps. Weight decay is L2 added to the gradient (as torch.optim.SGD/Adam do).

Batch norm normalizes with the statistics of the set it is applied to, as everywhere in metalab: the support
set while training, the query set when scoring. Tasks are batched by methods/batching.py; only first-order
gradients are taken, so vmap is exact here even through torch's batch norm.
"""

from dataclasses import dataclass
from functools import partial
from typing import Iterator

import torch
from torch import Tensor
from torch.func import grad

from metalab.config import FinetuneConfig
from metalab.data.episode import Episode
from metalab.errors import MetalabError
from metalab.methods import update_rules
from metalab.methods.batching import map_tasks
from metalab.methods.heads import Layers, check_start, initial_heads, layers_of
from metalab.methods.learner import Learner, Params, copy_parameters
from metalab.methods.method import MetaParams


@dataclass(frozen=True)
class FineTuning:
    """Fine-tuning on the one seam (methods/method.py): `scores` fine-tunes each task from meta["theta"]."""

    learner: Learner
    settings: FinetuneConfig
    batching: str = "vmap"
    scored: tuple[int, ...] | None = None  # the steps after which the query set is scored; None: every step
    step_name: str = "fine-tuning steps"

    @property
    def eval_steps(self) -> int:
        return self.settings.steps

    def init_meta(self) -> MetaParams:
        """The network's own (random) initialization as the starting point."""
        return {"theta": copy_parameters(self.learner.model)}

    def meta_loss(self, meta: MetaParams, episode: Episode, step: int) -> tuple[Tensor, Tensor]:
        raise MetalabError("fine-tuning learns nothing across tasks, so it has no meta-training; its starting point "
                           "comes from `metalab pretrain` or a meta-training checkpoint (`metalab finetune --init`)")

    def scores(self, meta: MetaParams, episode: Episode, steps: int) -> Tensor:
        """[steps + 1, B]; rows of steps not in `scored` are NaN: scoring a query set costs more than a step."""
        query_score = map_tasks(partial(_query_score, self.learner), self.batching, in_dims=(0, 0, 0))
        rows = []
        with torch.no_grad():
            for step, params in enumerate(self._trajectory(meta, episode, steps)):
                rows.append(query_score(params, episode.query_x, episode.query_y)
                            if self.scored is None or step in self.scored
                            else episode.query_x.new_full((episode.batch_size,), float("nan")))
        return torch.stack(rows)

    def predictions(self, meta: MetaParams, episode: Episode, steps: int) -> Tensor:
        """[B, Q, outputs] after `steps` steps, whatever `scored` says."""
        with torch.no_grad():
            for params in self._trajectory(meta, episode, steps):
                pass
            return map_tasks(self.learner.predict, self.batching, in_dims=(0, 0))(params, episode.query_x)

    def _trajectory(self, meta: MetaParams, episode: Episode, steps: int) -> Iterator[Params]:
        return finetune_steps(self.learner, meta["theta"], episode.support_x, episode.support_y,
                              self.settings.replace(steps=steps), self.batching)


def _query_score(learner: Learner, params: Params, query_x: Tensor, query_y: Tensor) -> Tensor:
    return learner.loss_and_score(params, query_x, query_y)[1]


def learning_rates(layers: Layers, config: FinetuneConfig) -> dict[str, float]:
    rates = dict.fromkeys(layers.head, config.head_lr)
    top = len(layers.body) - 1
    for index, block in enumerate(layers.body):
        rates.update(dict.fromkeys(block, config.body_lr * config.layer_decay ** (top - index)))
    return rates


def trained_at(step: int, layers: Layers, config: FinetuneConfig, rates: dict[str, float]) -> tuple[str, ...]:
    """Names of the parameters that step `step` (0-based) changes."""
    unfrozen = len(layers.body) - config.freeze_blocks
    if config.unfreeze_every:
        unfrozen = min(unfrozen, step // config.unfreeze_every)
    blocks = layers.body[len(layers.body) - unfrozen:]
    return tuple(name for name in (*layers.head, *(n for block in blocks for n in block)) if rates[name] > 0)


def finetune_steps(learner: Learner, start: Params, support_x: Tensor, support_y: Tensor, config: FinetuneConfig,
                   batching: str = "vmap") -> Iterator[Params]:
    """Yield the parameters of every task after 0, 1, ..., config.steps steps, batched: {name: [B, ...]}.

    support_x [B, S, ...], support_y [B, S]; start: the body's parameters (and a head for head_init keep),
    names as in learner.model. Parameters a step does not change stay the very tensors of `start` (expanded).
    """
    layers = layers_of(learner.model)
    check_start(learner.model, layers, start, config, regression=support_y.is_floating_point())
    tasks = support_x.shape[0]
    params = {name: start[name].expand(tasks, *start[name].shape) for name in layers.body_names}
    params.update(initial_heads(learner.model, layers, start, support_x, support_y, config, batching))
    rates = learning_rates(layers, config)
    ever_trained = {name for s in range(config.steps) for name in trained_at(s, layers, config, rates)}
    state = ({moment: {n: torch.zeros_like(params[n]) for n in ever_trained} for moment in ("m", "v")}
             if config.optimizer == "adam" else {})
    updates = dict.fromkeys(rates, 0)  # per parameter, for Adam's bias correction of late-unfrozen blocks
    yield params
    for step in range(config.steps):
        names = trained_at(step, layers, config, rates)
        for name in names:
            updates[name] += 1
        step_fn = partial(_optimizer_step, learner=learner, names=names, rates=rates,
                          updates={n: updates[n] for n in names}, config=config)
        task_state = {moment: {n: values[n] for n in names} for moment, values in state.items()}
        changed, changed_state = map_tasks(step_fn, batching, in_dims=(0, 0, 0, 0))(
            params, task_state, support_x, support_y)
        params = {**params, **changed}
        state = {moment: {**values, **changed_state[moment]} for moment, values in state.items()}
        yield params


def _optimizer_step(params: Params, state: dict[str, Params], support_x: Tensor, support_y: Tensor, *,
                    learner: Learner, names: tuple[str, ...], rates: dict[str, float], updates: dict[str, int],
                    config: FinetuneConfig) -> tuple[Params, dict[str, Params]]:
    """One step on one task (tensors without the task dimension): new values of `names` and their state."""

    def support_loss(trained: Params) -> Tensor:
        return learner.loss(learner.predict({**params, **trained}, support_x), support_y)

    gradients = grad(support_loss)({name: params[name] for name in names})
    new, new_state = {}, {moment: {} for moment in state}
    for name in names:
        gradient = gradients[name] + config.weight_decay * params[name] if config.weight_decay else gradients[name]
        if config.optimizer == "sgd":
            new[name] = update_rules.sgd(params[name], gradient, rates[name])
        else:
            new[name], new_state["m"][name], new_state["v"][name] = update_rules.adam(
                params[name], gradient, state["m"][name], state["v"][name], rates[name], updates[name])
    return new, new_state
