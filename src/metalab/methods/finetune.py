"""Fine-tuning, the baseline every meta-learner must beat: per task, start from weights learned without
meta-learning (or a MAML theta, or random weights), put a head on them and train on the support set only.

    body  the layers below the output layer, in blocks: each Conv2d or Linear with the batch norm after it
          (conv4: 4 blocks; the sinusoid MLP: 2)
    head  the output layer, sized for the task's ways, initialized as
            zero                    W = 0, b = 0
            random                  as nn.Linear does: uniform in +-1/sqrt(features), drawn per episode
            class_means             W_k = 2 c_k, b_k = -|c_k|^2, with c_k the mean support embedding of class k:
                                    logits = |z|^2 - |z - c_k|^2, so at 0 steps exactly the nearest class mean
            normalized_class_means  W_k = c_k / |c_k|, b = 0: nearest class mean by cosine at 0 steps
            keep                    the starting point's own head, its first `ways` rows (a MAML theta's head,
                                    whose rows are exchangeable since labels are permuted per task; or the
                                    sinusoid regressor's output layer)

Training: `steps` steps of SGD or Adam, written functionally on the parameter dictionary, on the support loss.
The head learns at head_lr, the body block d blocks below the top one at body_lr * layer_decay**d. The first
freeze_blocks blocks never change; with unfreeze_every = G the head trains alone for G steps, then one more
block, top down, joins every G steps. Weight decay is L2 added to the gradient (as torch.optim.SGD/Adam do).

Batch norm normalizes with the statistics of the set it is applied to, as everywhere in metalab: the support
set while training, the query set when scoring (as `metalab eval` scores MAML).

Tasks are batched with torch.func.vmap over the task dimension: see `BATCHING` for the measurement.
"""

import csv
import dataclasses
import itertools
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from metalab.data.atomic import atomic_path
from metalab.data.tasks import Episode, TaskDistribution, fixed_episodes, generator_for
from metalab.errors import MetalabError
from metalab.evaluation.stats import mean_ci
from metalab.methods.learner import Learner, Params, score

HEAD_INITS = ("zero", "random", "class_means", "normalized_class_means", "keep")
OPTIMIZERS = ("sgd", "adam")
# Measured with benchmarks/bench_finetune.py (50 tasks, 20 Adam steps on every block, query set scored once;
# one thread, both cores busy with other runs, load average 3.5): stride-2 Conv4-32 5-way 1-shot loop 17.0 s,
# vmap 6.0 s (2.9x); 5-way 5-shot 24.3 s vs 23.1 s; 20-way 1-shot 27.7 s vs 22.5 s; sinusoid MLP 10-shot
# 3.34 s vs 0.16 s (21x). A support set of 5 images is too small a batch to keep a core busy, so one batched
# step over all tasks wins, and it never lost. vmap is exact here because only first-order gradients are taken
# (batch norm with batch statistics included); a test checks it against the loop.
BATCHING = ("vmap", "loop")
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8


@dataclass(frozen=True)
class FinetuneConfig:
    head_init: str = "class_means"  # zero | random | class_means | normalized_class_means | keep
    steps: int = 50
    optimizer: str = "adam"  # sgd | adam
    head_lr: float = 1e-2
    body_lr: float = 1e-3  # of the top body block; 0 trains the head alone
    layer_decay: float = 1.0  # a block d blocks below the top learns at body_lr * layer_decay**d
    freeze_blocks: int = 0  # the first (lowest) body blocks that never change
    unfreeze_every: int = 0  # G > 0: head alone for G steps, then one more block (top down) every G steps
    weight_decay: float = 0.0

    def __post_init__(self):
        for name, allowed in (("head_init", HEAD_INITS), ("optimizer", OPTIMIZERS)):
            if getattr(self, name) not in allowed:
                raise MetalabError(f"--{name.replace('_', '-')} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("steps", "head_lr", "body_lr", "layer_decay", "freeze_blocks", "unfreeze_every",
                     "weight_decay"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise MetalabError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {value}")

    def replace(self, **changes) -> "FinetuneConfig":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Layers:
    """Parameter names of a network's body blocks (lowest first) and of its head (weight, bias)."""

    body: tuple[tuple[str, ...], ...]
    head: tuple[str, str]


def layers_of(model: nn.Module) -> Layers:
    """Blocks of an nn.Sequential that ends in its nn.Linear output layer (conv4, mlp): each Conv2d or Linear
    starts a block; parameterized layers after it (batch norm) belong to that block."""
    if not (isinstance(model, nn.Sequential) and isinstance(model[-1], nn.Linear)):
        raise MetalabError(f"fine-tuning needs an nn.Sequential network ending in its nn.Linear output layer "
                           f"(metalab.models.networks.conv4 or mlp), got {type(model).__name__}")
    blocks: list[list[str]] = []
    for index, module in list(model.named_children())[:-1]:
        names = [f"{index}.{name}" for name, _ in module.named_parameters()]
        if not names:
            continue
        if isinstance(module, (nn.Conv2d, nn.Linear)) or not blocks:
            blocks.append([])
        blocks[-1] += names
    head = str(len(model) - 1)
    return Layers(tuple(tuple(b) for b in blocks), (f"{head}.weight", f"{head}.bias"))


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
    return tuple(name for name in (*layers.head, *itertools.chain(*blocks)) if rates[name] > 0)


def finetune_steps(learner: Learner, start: Params, support_x: Tensor, support_y: Tensor, config: FinetuneConfig,
                   head_noise: Tensor | None = None, batching: str = "vmap") -> Iterator[Params]:
    """Yield the parameters of every task after 0, 1, ..., config.steps steps, batched: {name: [B, ...]}.

    support_x [B, S, ...], support_y [B, S]; start: the body's parameters (and a head for head_init keep),
    names as in learner.model; head_noise [B, ways, features + 1] uniform in [0, 1), for head_init random.
    Parameters a step does not change stay the very tensors of `start` (expanded views).
    """
    layers = layers_of(learner.model)
    _check_start(learner.model, layers, start, config, support_y, head_noise)
    if batching not in BATCHING:
        raise MetalabError(f"task batching must be one of {BATCHING}, got {batching!r}")
    over_tasks = vmap if batching == "vmap" else _loop_over_tasks
    tasks = support_x.shape[0]
    body_names = tuple(itertools.chain(*layers.body))
    params = {name: start[name].expand(tasks, *start[name].shape) for name in body_names}
    params.update(_initial_heads(learner.model, layers, start, support_x, support_y, config, head_noise, over_tasks))
    rates = learning_rates(layers, config)
    ever_trained = set(itertools.chain(*(trained_at(s, layers, config, rates) for s in range(config.steps))))
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
        changed, changed_state = over_tasks(step_fn)(params, task_state, support_x, support_y)
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
            new[name] = params[name] - rates[name] * gradient
            continue
        (beta1, beta2), t = ADAM_BETAS, updates[name]
        m = beta1 * state["m"][name] + (1 - beta1) * gradient
        v = beta2 * state["v"][name] + (1 - beta2) * gradient * gradient
        # torch.optim.Adam's arithmetic, so the two agree to rounding.
        denominator = v.sqrt() / math.sqrt(1 - beta2**t) + ADAM_EPS
        new[name] = params[name] - (rates[name] / (1 - beta1**t)) * m / denominator
        new_state["m"][name], new_state["v"][name] = m, v
    return new, new_state


def _initial_heads(model: nn.Sequential, layers: Layers, start: Params, support_x: Tensor, support_y: Tensor,
                   config: FinetuneConfig, head_noise: Tensor | None, over_tasks: Callable) -> Params:
    """Every task's head: {weight [B, ways, features], bias [B, ways]}."""
    weight_name, bias_name = layers.head
    tasks, (ways, features) = support_x.shape[0], model[-1].weight.shape
    like = start[layers.body[0][0]]
    if config.head_init == "zero":
        weight, bias = like.new_zeros(tasks, ways, features), like.new_zeros(tasks, ways)
    elif config.head_init == "random":
        uniform = (head_noise.to(like) * 2 - 1) / math.sqrt(features)
        weight, bias = uniform[..., :features], uniform[..., features]
    elif config.head_init == "keep":
        weight = start[weight_name][:ways].expand(tasks, ways, features)
        bias = start[bias_name][:ways].expand(tasks, ways)
    else:
        body = {name: start[name] for name in itertools.chain(*layers.body)}
        head_of = partial(class_mean_head, model[:-1], body, ways=ways,
                          normalized=config.head_init == "normalized_class_means")
        weight, bias = over_tasks(head_of)(support_x, support_y)
    return {weight_name: weight, bias_name: bias}


def class_mean_head(body_model: nn.Module, body: Params, support_x: Tensor, support_y: Tensor, ways: int,
                    normalized: bool) -> tuple[Tensor, Tensor]:
    """One task's head from its class means c [ways, features] of the support embeddings: (2c, -|c|^2), whose
    logits rank classes by Euclidean distance to c, or (c / |c|, 0), which ranks them by cosine."""
    embeddings = functional_call(body_model, body, (support_x,))  # [S, features]
    members = (support_y.unsqueeze(1) == torch.arange(ways, device=support_y.device)).to(embeddings.dtype)
    means = members.T @ embeddings / members.sum(0).unsqueeze(1)  # [ways, features]
    if normalized:
        return means / means.norm(dim=1, keepdim=True), torch.zeros_like(means[:, 0])
    return 2 * means, -(means * means).sum(1)


def _loop_over_tasks(fn: Callable) -> Callable:
    """vmap's stand-in: fn applied to each task in turn (dimension 0 of every tensor argument), stacked."""

    def looped(*args):
        tasks = _first_tensor(args).shape[0]
        return _stack([fn(*_select(args, i)) for i in range(tasks)])

    return looped


def _first_tensor(tree):
    if isinstance(tree, Tensor):
        return tree
    for value in (tree.values() if isinstance(tree, dict) else tree):
        found = _first_tensor(value)
        if found is not None:
            return found
    return None


def _select(tree, i: int):
    if isinstance(tree, Tensor):
        return tree[i]
    if isinstance(tree, dict):
        return {key: _select(value, i) for key, value in tree.items()}
    return tuple(_select(value, i) for value in tree)


def _stack(trees: list):
    first = trees[0]
    if isinstance(first, Tensor):
        return torch.stack(trees)
    if isinstance(first, dict):
        return {key: _stack([tree[key] for tree in trees]) for key in first}
    return tuple(_stack(list(parts)) for parts in zip(*trees))


def _check_start(model: nn.Sequential, layers: Layers, start: Params, config: FinetuneConfig, support_y: Tensor,
                 head_noise: Tensor | None) -> None:
    expected = {name: p.shape for name, p in model.named_parameters()}
    needed = list(itertools.chain(*layers.body)) + (list(layers.head) if config.head_init == "keep" else [])
    for name in needed:
        if name not in start:
            what = ("the starting point has no output layer to keep; use --head-init class_means, zero or random"
                    if name in layers.head else f"the starting point has no parameter {name!r}")
            raise MetalabError(f"{what} (it has {sorted(start)})")
        shape = start[name].shape
        fits = shape[1:] == expected[name][1:] if name in layers.head else shape == expected[name]
        if not fits:
            raise MetalabError(f"the starting point's {name} has shape {tuple(shape)}, but this network's is "
                               f"{tuple(expected[name])}: fine-tune with the architecture it was trained with "
                               "(--hidden, --pooling of the checkpoint)")
    ways = expected[layers.head[0]][0]
    if config.head_init == "keep" and start[layers.head[0]].shape[0] < ways:
        raise MetalabError(f"--head-init keep reuses the starting point's output layer, which has "
                           f"{start[layers.head[0]].shape[0]} outputs, but the tasks are {ways}-way; use "
                           f"--ways {start[layers.head[0]].shape[0]} or fewer, or --head-init class_means, zero "
                           "or random")
    if config.head_init.endswith("class_means") and support_y.is_floating_point():
        raise MetalabError(f"--head-init {config.head_init} needs class labels, but these tasks are regression; "
                           "use --head-init keep, zero or random")
    if config.freeze_blocks > len(layers.body):
        raise MetalabError(f"--freeze-blocks {config.freeze_blocks} exceeds the network's {len(layers.body)} "
                           f"body blocks; use at most {len(layers.body)} (which trains the head alone)")
    noise_shape = (ways, model[-1].in_features + 1)
    if config.head_init == "random" and (head_noise is None or tuple(head_noise.shape[1:]) != noise_shape):
        raise ValueError(f"head_init random needs head_noise [B, {noise_shape[0]}, {noise_shape[1]}]")


def random_head_noise(model: nn.Sequential, seed: int, first: int, count: int) -> Tensor:
    """[count, ways, features + 1] uniform in [0, 1) for episodes first..first+count-1: episode i's draw depends
    only on (seed, i), so scores do not depend on how episodes are batched."""
    ways, features = model[-1].weight.shape
    return torch.stack([torch.rand(ways, features + 1, generator=generator_for(seed, i))
                        for i in range(first, first + count)])


def finetune_scores(learner: Learner, start: Params, episodes: Iterable[Episode], config: FinetuneConfig,
                    record_at: Sequence[int], batching: str = "vmap", seed: int = 0) -> np.ndarray:
    """[len(record_at), episodes]: each episode's query score (accuracy, or MSE for regression) after each
    number of steps in record_at (ascending, at most config.steps); the layout `metalab compare` reads.
    Episodes are moved to the device of `start`."""
    record_at = list(record_at)
    if not record_at or record_at != sorted(set(record_at)) or record_at[0] < 0 or record_at[-1] > config.steps:
        raise MetalabError(f"steps to score must be ascending and within 0..{config.steps}, got {record_at}")
    over_tasks = vmap if batching == "vmap" else _loop_over_tasks
    query_score = over_tasks(partial(_query_score, learner))
    device = next(iter(start.values())).device
    columns, first = [], 0
    with torch.no_grad():
        for batch in episodes:
            batch, tasks = batch.to(device), batch.batch_size
            noise = random_head_noise(learner.model, seed, first, tasks) if config.head_init == "random" else None
            rows = [query_score(params, batch.query_x, batch.query_y)
                    for step, params in enumerate(finetune_steps(learner, start, batch.support_x, batch.support_y,
                                                                 config, noise, batching))
                    if step in record_at]
            columns.append(torch.stack(rows))
            first += tasks
    return torch.cat(columns, dim=1).double().cpu().numpy()


def _query_score(learner: Learner, params: Params, query_x: Tensor, query_y: Tensor) -> Tensor:
    prediction = learner.predict(params, query_x)
    return score(prediction, query_y, learner.loss(prediction, query_y))


def grid_search(learner: Learner, start: Params, val_tasks: TaskDistribution, base: FinetuneConfig,
                grid: Mapping[str, Sequence], episodes: int, seed: int, maximize: bool, table: Path | None = None,
                batching: str = "vmap") -> tuple[FinetuneConfig, list[dict]]:
    """Score every combination of the grid's values on `episodes` fixed episodes of `val_tasks` (meta-validation
    tasks: the selection must never see meta-test). grid: {FinetuneConfig field: values}; the values of "steps"
    are scored along a single run of each combination. Prints a line per combination; writes the table as CSV
    to `table` if given.
    Returns the best config (highest mean score, or lowest if not `maximize`) and the table's rows."""
    unknown = set(grid) - {field.name for field in dataclasses.fields(FinetuneConfig)}
    if unknown:
        raise MetalabError(f"unknown grid fields {sorted(unknown)}; choose among "
                           f"{[f.name for f in dataclasses.fields(FinetuneConfig)]}")
    if any(len(values) == 0 for values in grid.values()):
        raise MetalabError(f"every grid field needs at least one value, got {dict(grid)}")
    steps = sorted(set(grid.get("steps", [base.steps])))
    fields = [name for name in grid if name != "steps"]
    rows = []
    for values in itertools.product(*(grid[name] for name in fields)):
        combination = dict(zip(fields, values))
        config = base.replace(**combination, steps=steps[-1])
        scores = finetune_scores(learner, start, fixed_episodes(val_tasks, seed, episodes), config, steps, batching)
        for count, row_scores in zip(steps, scores):
            estimate = mean_ci(row_scores)
            rows.append({**dataclasses.asdict(config), "steps": count, "mean": estimate.mean,
                         "ci95": estimate.ci95, "episodes": estimate.n})
        print("  " + ", ".join(f"{k}={v}" for k, v in combination.items()) + " | after "
              + ", ".join(f"{row['steps']} steps {row['mean']:.4f}" for row in rows[-len(steps):]), flush=True)
    best = (max if maximize else min)(rows, key=lambda row: row["mean"])
    if table is not None:
        write_table(rows, table)
    return FinetuneConfig(**{f.name: best[f.name] for f in dataclasses.fields(FinetuneConfig)}), rows


def write_table(rows: list[dict], path: Path) -> None:
    with atomic_path(Path(path)) as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
