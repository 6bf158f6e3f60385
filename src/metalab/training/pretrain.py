"""Pre-training for the fine-tuning baseline: plain supervised learning, no meta-learning.

Omniglot: the backbone (Conv4, as the meta-learners use) with one output per meta-train class, trained on all
of them at once (the minimal split: 116 characters x 4 rotations = 464 classes). The last `val_drawers`
drawers of every class (17-20 by default) are held out; their accuracy stops training early. The
meta-validation and meta-test characters are never seen, so they stay fair for selecting and scoring the
fine-tuning that follows.
Sinusoid: the MAML paper's "pretrained on all tasks" baseline: one MLP regressing y on x over points of
freshly drawn random tasks, stopped early on the MSE of a fixed set of other tasks.

Adam; after every epoch the validation score is measured, and each improvement is saved atomically to
out_dir/pretrained.pt: the body's parameters (no head: its classes are not the test classes; the sinusoid
regressor keeps its output layer, which every task shares), the config and the validation score.
Training stops after `patience` epochs without improvement, or after `max_epochs`.
"""

import copy
import dataclasses
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalab.config import PretrainConfig
from metalab.data.classification import ROTATIONS, class_table
from metalab.data.episode import VAL_SEED, contiguous_share, fixed_episodes, generator_for
from metalab.data.sinusoid import SinusoidTasks
from metalab.data.splits import load_split_data
from metalab.distributed import sync
from metalab.distributed.group import Group
from metalab.errors import MetalabError
from metalab.models.networks import conv4, mlp
from metalab.runtime import configure_torch
from metalab.training.optimizer import Adam
from metalab.training.run_folder import claimed

KIND = "pretrained"  # the checkpoint's "kind", so a fine-tuning start can tell it from a meta-training one
VAL_BATCH = 512  # validation images per forward pass


def pretrain(config: PretrainConfig, out_dir, data_dir=None, group: Group = Group()) -> dict:
    """Pre-train as configured; returns the saved checkpoint's contents (parameters on the CPU). With a group
    of several processes (distributed.group.join) each splits every batch's examples; rank 0 writes."""
    configure_torch(config.threads, config.device)
    # One writer of the folder at a time: rank 0, the only one that writes.
    with claimed(Path(out_dir), "--out") if group.is_main else nullcontext(Path(out_dir)) as out_dir:
        out_path = out_dir / "pretrained.pt"
        if config.problem == "sinusoid":
            return pretrain_regressor(config, out_path, group=group)
        data, split = load_split_data(config.split, data_dir)
        bank, table = class_table(data, split.train, ROTATIONS if config.rotations else (0,))
        return pretrain_classifier(config, bank, table, out_path, group)


def pretrain_classifier(config: PretrainConfig, bank: Tensor, table: Tensor, out_path: Path,
                        group: Group = Group()) -> dict:
    """bank uint8 [M, H, W]; table int64 [C, D]: the D drawings of each class (columns: drawers, in order)."""
    classes, drawers = table.shape
    if config.val_drawers >= drawers:
        raise MetalabError(f"--val-drawers {config.val_drawers} leaves no training drawings of the {drawers} per "
                           f"class; use at most {drawers - 1}")
    labels = torch.arange(classes).unsqueeze(1)
    train_images, train_labels = _flatten(table[:, :-config.val_drawers], labels)
    val_images, val_labels = _flatten(table[:, -config.val_drawers:], labels)
    torch.manual_seed(config.seed)
    model = conv4(classes, hidden=config.hidden, pooling=config.pooling, image_size=bank.shape[-1])

    def pixels(index: Tensor) -> Tensor:
        return bank.index_select(0, index).to(torch.float32).mul_(1.0 / 255.0).unsqueeze(1)

    def epoch_batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        order = torch.randperm(len(train_images), generator=generator_for(config.seed, epoch))
        for start in range(0, len(order), config.batch_size):
            chosen = order[start:start + config.batch_size]
            yield pixels(train_images[chosen]), train_labels[chosen]

    val_batches = [(pixels(val_images[s:s + VAL_BATCH]), val_labels[s:s + VAL_BATCH])
                   for s in range(0, len(val_images), VAL_BATCH)]
    return _fit(config, model, F.cross_entropy, epoch_batches, val_batches, "accuracy", out_path,
                keep_head=False, group=group)


def pretrain_regressor(config: PretrainConfig, out_path: Path, tasks: SinusoidTasks = SinusoidTasks(),
                       group: Group = Group()) -> dict:
    """One MLP regressing y on x over the points of random tasks (each step: batch_size fresh tasks); validated
    on fixed tasks of meta-training's validation seed."""
    torch.manual_seed(config.seed)
    model = mlp(1, config.hidden)

    def epoch_batches(epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        for step in range(config.steps_per_epoch):
            episode = tasks.sample(generator_for(config.seed, epoch, step), config.batch_size)
            yield torch.cat([episode.support_x, episode.query_x], 1).flatten(0, 1), \
                torch.cat([episode.support_y, episode.query_y], 1).flatten(0, 1)

    val_batches = [(torch.cat([e.support_x, e.query_x], 1).flatten(0, 1),
                    torch.cat([e.support_y, e.query_y], 1).flatten(0, 1))
                   for e in fixed_episodes(tasks, VAL_SEED, config.val_episodes)]
    return _fit(config, model, F.mse_loss, epoch_batches, val_batches, "MSE", out_path, keep_head=True, group=group)


def _flatten(table: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """[C, D] image indices and [C, 1] labels -> [C*D] indices, [C*D] labels."""
    return table.reshape(-1), labels.expand_as(table).reshape(-1)


def validation_score(model: nn.Module, batches: list[tuple[Tensor, Tensor]], metric: str) -> float:
    """Accuracy or MSE over all validation examples (batch norm: the statistics of each batch)."""
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in batches:
            prediction = model(x)
            total += ((prediction.argmax(1) == y).sum().item() if metric == "accuracy"
                      else F.mse_loss(prediction, y, reduction="sum").item())
            count += y.numel()
    return total / count


def _fit(config: PretrainConfig, model: nn.Module, loss_fn: Callable, epoch_batches: Callable,
         val_batches: list, metric: str, out_path: Path, keep_head: bool, group: Group) -> dict:
    """Adam with early stopping on validation_score; saves each improvement. Returns the best state.

    Several processes: each takes its contiguous share of every batch's examples and of the validation
    batches. The result is the one-process run's, except that a batch-norm network (the Conv4 classifier)
    normalizes over each process's share, as DistributedDataParallel does (docs/distributed.md)."""
    device = group.place(torch.device(config.device))
    model.to(device)
    params = list(model.parameters())
    sync.broadcast_parameters(group, params)
    val_batches = [(x.to(device), y.to(device))  # fixed: moved once, not every epoch
                   for x, y in val_batches[slice(*contiguous_share(len(val_batches), group.rank, group.size))]]
    val_examples = sum(y.numel() for _, y in val_batches)
    optimizer = Adam(params, weight_decay=config.weight_decay)
    better = (lambda a, b: a > b) if metric == "accuracy" else (lambda a, b: a < b)
    best, history, started, step = None, [], time.perf_counter(), 0
    for epoch in range(1, config.max_epochs + 1):
        loss_sum, examples = 0.0, 0
        for x, y in epoch_batches(epoch):
            step += 1
            group.enter(step)
            start, stop = contiguous_share(len(y), group.rank, group.size)
            optimizer.zero_grad()
            # A share can be empty (a last batch smaller than the number of processes): it adds no gradient.
            loss = loss_fn(model(x[start:stop].to(device)), y[start:stop].to(device)) if stop > start else None
            if loss is not None:
                loss.backward()
            loss = loss if loss is not None else torch.zeros((), device=device)
            loss = sync.mean_gradients(group, params, loss, loss, stop - start, len(y), step)[0]
            optimizer.step(config.lr)
            loss_sum += loss * len(y)
            examples += len(y)
        val = validation_score(model, val_batches, metric) if val_batches else 0.0
        val = sync.weighted_mean(group, val, val_examples, step, "the validation score")
        sync.check_in_sync(group, params, step)
        improved = best is None or better(val, best["val"])
        history.append({"epoch": epoch, "train_loss": loss_sum / examples, "val": val,
                        "time": time.perf_counter() - started})
        if group.is_main:
            print(f"epoch {epoch}: train loss {loss_sum / examples:.4f}, val {metric} {val:.4f}"
                  f"{' (best)' if improved else ''}, {history[-1]['time']:.0f} s", flush=True)
        if improved:
            best = _state(config, model, keep_head, val, metric, epoch, history)
            sync.save_from_main(group, out_path, lambda: best, step)
        elif epoch - best["epoch"] >= config.patience:
            break
    best["history"] = history
    sync.save_from_main(group, out_path, lambda: best, step)
    return best


def _state(config, model: nn.Sequential, keep_head: bool, val: float, metric: str, epoch: int, history) -> dict:
    head = str(len(model) - 1)
    body = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if not n.startswith(head + ".")}
    head_params = ({n: p.detach().cpu().clone() for n, p in model.named_parameters() if n.startswith(head + ".")}
                   if keep_head else None)
    return {"kind": KIND, "config": dataclasses.asdict(config), "body": body, "head": head_params,
            "val": val, "metric": metric, "epoch": epoch, "history": copy.deepcopy(history)}
