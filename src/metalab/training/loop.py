"""The one meta-training loop, for every method.

Each step draws its tasks from a generator seeded by (seed, step), so a run is a pure function of its
config: resuming from a checkpoint, or sharding a step's tasks over processes, computes the same thing.
"""

import dataclasses
import math
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from tqdm import tqdm

from metalab.config import Config
from metalab.data.episode import VAL_SEED, fixed_episodes, generator_for
from metalab.distributed import sync
from metalab.distributed.group import Group
from metalab.evaluation.evaluate import evaluate
from metalab.methods.registry import entry, make_method
from metalab.models.networks import reinitialize
from metalab.plots import learning_curves
from metalab.problem import Problem, build_problem
from metalab.runtime import configure_torch
from metalab.training.guards import Guard, chance_note, gradient_norm
from metalab.training.metrics_log import MetricsLog
from metalab.training.optimizer import Adam
from metalab.training.resume import restore
from metalab.training.run_folder import claimed, start_or_refuse

TRAIN_STREAM = 0  # meta-training tasks of step t come from generator_for(seed, TRAIN_STREAM, t)


def meta_parameters(meta: dict) -> list[torch.Tensor]:
    return [p for group in meta.values() for p in group.values()]


def train(config: Config, out_dir: Path, resume: bool = False, data_dir=None, problem: Problem | None = None,
          overwrite: bool = False, group: Group = Group(), check_every: int = 100) -> Path:
    """Meta-train; writes last.pt / best.pt, metrics.jsonl, TensorBoard events and curves.png to out_dir.

    `problem` replaces the one built from the config: your own task distributions and network (whose
    initialization is drawn again from `config.seed`); the method is the config's (`method`, `inner_lr`, ...).
    A folder that holds a run is continued with `resume`, replaced with `overwrite`, else refused; one process
    at a time writes into it. `group` (distributed.group.join) splits each step's tasks over processes, which
    compute the same run; their parameters are compared every `check_every` steps. Rank 0 alone writes.
    """
    device = group.place(configure_torch(config.threads, config.device))
    entry(config.method)  # an unknown method fails here, before the folder is touched
    with claimed(Path(out_dir)) if group.is_main else nullcontext(Path(out_dir)) as out_dir:
        if group.is_main:
            start_or_refuse(out_dir, resume, overwrite)
        return _train(config, out_dir, resume, data_dir, problem, device, group, check_every)


def _train(config: Config, out_dir: Path, resume: bool, data_dir, problem: Problem | None, device, group: Group,
           check_every: int) -> Path:
    tasks_here = group.share(config.meta_batch_size, "tasks of a meta-batch")
    problem = problem or build_problem(config, data_dir, parts=("train", "val"))
    method = make_method(config, problem.learner)
    metric = problem.learner.metric
    # The initialization comes from the seed, not from whatever state torch's global generator was in when the
    # network was built (this torch seeds it differently in every process).
    reinitialize(problem.learner.model, config.seed)
    meta = method.init_meta()
    meta = {g: {n: p.detach().to(device).requires_grad_(True) for n, p in ps.items()} for g, ps in meta.items()}
    problem.learner.model.to(device)
    optimizer = Adam(meta_parameters(meta))
    schedule = _schedule(config)
    start, best, guard = 0, None, Guard(config)
    state = sync.load_from_main(group, out_dir / "last.pt") if resume else None
    if state is not None:
        start, best = restore(state, out_dir / "last.pt", config, meta, optimizer)
        guard.saved(out_dir / "last.pt", start)
    elif resume and group.is_main:
        print(f"no checkpoint in {out_dir}; starting from step 0")
    sync.broadcast_parameters(group, meta_parameters(meta))

    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(out_dir / "tensorboard"), purge_step=start) if group.is_main else None
    val_set = list(fixed_episodes(problem.tasks["val"], VAL_SEED, config.val_episodes, share=(group.rank, group.size)))
    log = MetricsLog(out_dir / "metrics.jsonl", start) if group.is_main else None  # records past `start` recomputed
    # Wall time and this process's CPU time, both continued across resumes. CPU time is what a run costs
    # on a shared machine, where wall time also counts the other processes' turns on the cores.
    wall_clock = time.perf_counter() - (log.last("time") if log else 0.0)
    cpu_clock = time.process_time() - (log.last("cpu_time") if log else 0.0)
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc="meta-train", dynamic_ncols=True,
               disable=not group.is_main)
    for step in bar:
        done = step + 1
        group.enter(done)
        # Every rank draws the whole meta-batch and keeps its share: the tasks depend on (seed, step, index) only.
        episode = problem.tasks["train"].sample(generator_for(config.seed, TRAIN_STREAM, step),
                                                config.meta_batch_size).tasks(*tasks_here).to(device)
        optimizer.zero_grad()
        loss, score = method.meta_loss(meta, episode, step)
        loss.backward()
        loss, score = sync.mean_gradients(group, meta_parameters(meta), loss, score, episode.batch_size,
                                           config.meta_batch_size, done)
        grad_norm = gradient_norm(meta_parameters(meta), config.grad_clip)
        guard.step(done, loss, grad_norm)
        optimizer.step(config.meta_lr * schedule(step))
        if done % config.val_every == 0 or done % config.checkpoint_every == 0 or done == config.steps:
            guard.parameters(done, meta_parameters(meta))
        record = {"step": done, "time": time.perf_counter() - wall_clock, "cpu_time": time.process_time() - cpu_clock,
                  "loss": loss, "score": score}
        if done % config.log_every == 0:
            record["grad_norm"] = float(grad_norm)
            bar.set_postfix(loss=f"{loss:.3f}", score=f"{score:.3f}")
        if done % config.val_every == 0 or done == config.steps:
            record["val"] = evaluate(meta, method, val_set, [method.eval_steps], group, done)[method.eval_steps].mean
            guard.validation(done, record["val"], metric)
            improved = best is None or _better(record["val"], best, metric.higher_is_better)
            if improved:
                best = record["val"]
            if group.is_main:
                bar.write(f"step {done}: val {metric.name} {record['val']:.4f}{' (best)' if improved else ''}")
            if improved:
                sync.save_from_main(group, out_dir / "best.pt",
                                    lambda: _state(config, meta, optimizer, done, best), done)
        if done % check_every == 0 or done == config.steps:
            sync.check_in_sync(group, meta_parameters(meta), done)
        if log and (done % config.log_every == 0 or "val" in record):
            log.append(record)
            for key in ("loss", "score", "val", "grad_norm"):
                if key in record:
                    writer.add_scalar(key, record[key], done)
        if done % config.checkpoint_every == 0 or done == config.steps:
            sync.save_from_main(group, out_dir / "last.pt",
                                lambda: _state(config, meta, optimizer, done, best), done)
            guard.saved(out_dir / "last.pt", done)
    if group.is_main:
        log.close()
        writer.close()
        learning_curves(out_dir / "metrics.jsonl", out_dir / "curves.png", metric.name)
        note = chance_note(metric, config, best)
        if note:
            print(note)
    return out_dir


def _better(value: float, best: float, higher_is_better: bool) -> bool:
    return value > best if higher_is_better else value < best


def _schedule(config: Config):
    if config.lr_schedule == "constant":
        return lambda step: 1.0
    return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, config.steps) / config.steps))


def _state(config, meta, optimizer, step, best) -> dict:
    return {"config": dataclasses.asdict(config), "step": step, "best": best,
            "meta": {g: {n: p.detach().cpu() for n, p in ps.items()} for g, ps in meta.items()},
            "optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()}
