"""`metalab eval A.pt B.pt ...`: several checkpoints on the same held-out episodes, and their test-time ensemble.

Each member is scored at its own adaptation steps (its run's eval_inner_steps, unless --steps is given) on the
episodes fixed by (part, seed, count, ways, shots, queries), exactly as `metalab eval` scores it alone. The
ensemble predicts each query by the members' predictions averaged by the metric (methods/learner.py
Metric.average): the mean of their class probabilities, or the mean of their values for regression. Its cost
is printed beside its gain: each member's evaluation CPU seconds and, where the run's metrics.jsonl says, its
training's (docs/design.md says why probabilities and why each member keeps its steps).
"""

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from metalab.config import Config
from metalab.data.episode import TaskDistribution, fixed_episodes
from metalab.data.support_augment import SupportAugmentedTasks, SupportCopies
from metalab.errors import MetalabError
from metalab.evaluation.checkpoints import (
    WaysMismatch,
    check_support_copies,
    episodes_text,
    load_trained,
    meta_on,
    method_for,
)
from metalab.evaluation.report import estimate_text, row_summary
from metalab.evaluation.score_files import save_score_file
from metalab.evaluation.stats import paired_difference
from metalab.methods.learner import Learner
from metalab.methods.method import MetaParams, Method
from metalab.methods.registry import entry
from metalab.problem import EVAL_QUERIES, build_problem, image_learner, regression_tasks
from metalab.runtime import configure_torch

COMBINATION = {"accuracy": "mean of the members' class probabilities", "MSE": "mean of the members' predictions"}


@dataclass
class Member:
    """One checkpoint of the ensemble, ready to predict the queries of the episodes it reads."""

    path: Path
    config: Config  # as trained, with the evaluation's ways, shots and queries
    meta: MetaParams  # on its device
    method: Method
    learner: Learner
    steps: int  # its adaptation steps
    reads_copies: bool  # its support sets carry --support-augment's distorted copies
    trained_step: int | None  # the checkpoint's meta-training step, when it records one


def evaluate_ensemble(paths, ways=None, shots=None, queries=None, steps=None, inner_lr=None, episodes=1000, seed=0,
                      part="test", data_dir=None, save_scores=None, device=None, threads=None,
                      within_alphabet: float = 0.0, support: SupportCopies = SupportCopies(),
                      training_cost: Callable[[Path, int | None], dict | None] | None = None) -> dict:
    """Scores of each checkpoint in `paths` and of their ensemble on the same fixed episodes; prints them, the
    ensemble minus its best member paired over the episodes, and the cost. `training_cost(path, step)`: what
    training the checkpoint cost, or None when nothing records it. --save-scores saves the ensemble's scores
    [1, episodes]. Members of different problems or episodes are a MetalabError naming the checkpoint."""
    loaded = [load_trained(path, ways=ways, shots=shots, inner_lr=inner_lr, device=device, threads=threads,
                           val_ways=0) for path in paths]
    configs = [config.replace(queries=queries or EVAL_QUERIES[config.problem]) for config, _, _ in loaded]
    _check_same_tasks(paths, configs)
    readers = [config for config in configs if not entry(config.method).fixed_support]
    # Omniglot, and a member that takes extra shots (the others read the plain support set); else one line
    check_support_copies(readers[0] if readers else configs[0], support)
    problem = build_problem(configs[0], data_dir, parts=(part,), held_out_within_alphabet=within_alphabet)
    members = [_member(path, config, meta, state, problem.learner if index == 0 else None, steps)
               for index, (path, config, (_, meta, state)) in enumerate(zip(paths, configs, loaded))]
    plain = problem.tasks[part]
    augmented = SupportAugmentedTasks(plain, support) if support.copies else plain
    started = time.perf_counter()
    scores, cpu_seconds, ensemble, averaging_seconds = _scores(
        members, [augmented if member.reads_copies else plain for member in members], seed, episodes)
    metric = problem.learner.metric
    print(f"ensemble of {len(members)} checkpoints, {episodes_text(configs[0], within_alphabet)}, {episodes} {part} "
          f"episodes (seed {seed}), {time.perf_counter() - started:.0f} s")
    if support.copies:
        print(f"  support + {support.text()} of each image for the "
              "members marked 'reads copies'; the others read the plain support set; the queries are the same")
    summaries = []
    for member, row, cpu in zip(members, scores, cpu_seconds):
        line, summary = row_summary(row[None], 0, metric)
        when = f"after {member.steps} {member.method.step_name}" if member.method.step_name else "no steps"
        copies = ", reads copies" if member.reads_copies and support.copies else ""
        print(f"  {member.path}: {member.config.method} ({when}{copies}): {metric.name} {line}; {cpu:.1f} CPU s")
        summaries.append({"checkpoint": str(member.path), "method": member.config.method, "steps": member.steps,
                          "step_name": member.method.step_name, "reads_support_copies": member.reads_copies and
                          bool(support.copies), **summary, "cpu_seconds": cpu,
                          "config": dataclasses.asdict(member.config)})
    line, summary = row_summary(ensemble[None], 0, metric)
    print(f"  ensemble ({COMBINATION.get(metric.name, 'Metric.average of the predictions')}): {metric.name} {line}")
    best = _best(scores, metric.higher_is_better)
    difference = _difference(ensemble, scores[best])
    better = "higher" if metric.higher_is_better else "lower"
    print(f"  ensemble - best member ({members[best].path}), paired over {episodes} episodes: "
          f"{estimate_text(difference, metric) if difference else 'not defined (some episodes diverged)'} "
          f"({better} is better)")
    cost = _cost(members, cpu_seconds, averaging_seconds, training_cost)
    results = {"checkpoints": [str(path) for path in paths], "part": part, "episodes": episodes, "seed": seed,
               "within_alphabet": within_alphabet, "metric": metric.name,
               "support_augment": dataclasses.asdict(support),
               "members": summaries, "cost": cost,
               "ensemble": {"combination": COMBINATION.get(metric.name, "Metric.average"), **summary,
                            "minus_best_member": {"member": str(members[best].path),
                                                  **(dataclasses.asdict(difference) if difference else {})}}}
    if save_scores:
        save_score_file(save_scores, ensemble[None])
    return results


def _check_same_tasks(paths, configs: list[Config]) -> None:
    """Every member predicts the queries of the same episodes: one problem, one split or task distribution, the
    same ways and shots (given, or as every member was trained)."""
    first, base = paths[0], configs[0]
    for path, config in zip(paths[1:], configs[1:]):
        if config.problem != base.problem:
            raise MetalabError(f"{path} models {config.problem} tasks and {first} {base.problem} ones: an ensemble's "
                               "members predict the same queries; pass checkpoints of one problem")
        sizes = ("ways", "shots") if config.problem == "omniglot" else ("shots",)
        differ = [name for name in sizes if getattr(config, name) != getattr(base, name)]
        if differ:
            raise MetalabError(f"{path} was trained {_size_text(config)} and {first} {_size_text(base)}: pass "
                               f"{' and '.join('--' + name for name in differ)} to score every member on the same "
                               "episodes")
        if config.problem == "omniglot" and config.split != base.split:
            raise MetalabError(f"{path} was trained on the {config.split} split and {first} on the {base.split} "
                               "split, whose held-out characters differ; pass checkpoints of one split")
        if config.problem != "omniglot" and regression_tasks(config) != regression_tasks(base):
            raise MetalabError(f"{path} was trained on other {config.problem} tasks than {first} "
                               f"({regression_tasks(config)} vs {regression_tasks(base)}); pass checkpoints of one "
                               "task distribution")


def _size_text(config: Config) -> str:
    return f"{config.ways}-way {config.shots}-shot" if config.problem == "omniglot" else f"{config.shots}-shot"


def _member(path, config: Config, meta: MetaParams, state: dict, learner: Learner | None, steps) -> Member:
    """The checkpoint read from `path` on `learner` (default: a network of its own config)."""
    device = configure_torch(config.threads, config.device)
    meta = meta_on(meta, device)
    learner = learner or (image_learner(config) if config.problem == "omniglot"
                          else build_problem(config, parts=()).learner)
    trained_ways = state["config"].get("ways", Config.ways)
    try:
        method = method_for(config, meta, state, learner, path, device,
                            fix=f"drop it from the ensemble, or pass --ways {trained_ways} (for every member)")
    except WaysMismatch as error:
        raise WaysMismatch(f"{path}: {error}") from error
    if not hasattr(method, "predictions"):
        raise MetalabError(f"{path}: its method {config.method} has no `predictions` (methods/method.py), which an "
                           "ensemble averages; evaluate it alone, or give the method that member")
    reads_copies = not entry(config.method).fixed_support
    step = state.get("step") if isinstance(state.get("step"), int) else None
    return Member(Path(path), config, meta, method, learner, method.eval_steps if steps is None else steps,
                  reads_copies, step)


def _scores(members: list[Member], tasks: list[TaskDistribution], seed: int,
            episodes: int) -> tuple[np.ndarray, list[float], np.ndarray, float]:
    """(each member's scores [members, episodes], its CPU seconds drawing its episodes and predicting their queries,
    the ensemble's scores [episodes], the CPU seconds of averaging), float64."""
    streams = [fixed_episodes(member_tasks, seed, episodes) for member_tasks in tasks]
    cpu, rows, ensemble, averaging = [0.0] * len(members), [[] for _ in members], [], 0.0
    for batches in _batches(streams, cpu):
        first = batches[0]
        predictions = []
        for index, (member, batch) in enumerate(zip(members, batches)):
            if not (torch.equal(batch.query_x, first.query_x) and torch.equal(batch.query_y, first.query_y)):
                raise RuntimeError(f"{member.path} was given other queries than {members[0].path}: support "
                                   "augmentation must draw after the task, leaving its queries as they were")
            started = time.process_time()
            predicted = member.method.predictions(member.meta, batch.to(_device(member)), member.steps).cpu()
            rows[index].append(member.learner.task_losses(predicted, batch.query_y)[1])
            cpu[index] += time.process_time() - started
            predictions.append(predicted)
        started = time.process_time()
        averaged = members[0].learner.metric.average(torch.stack(predictions))
        ensemble.append(members[0].learner.task_losses(averaged, first.query_y)[1])
        averaging += time.process_time() - started
    scores = np.stack([torch.cat(row).double().numpy() for row in rows])
    return scores, cpu, torch.cat(ensemble).double().numpy(), averaging


def _batches(streams, cpu: list[float]):
    """The streams' batches side by side, the CPU seconds of drawing each stream's added to its member's."""
    while True:
        batches = []
        for index, stream in enumerate(streams):
            started = time.process_time()
            batch = next(stream, None)
            cpu[index] += time.process_time() - started
            if batch is None:
                return
            batches.append(batch)
        yield batches


def _device(member: Member) -> torch.device:
    return next(iter(member.meta["theta"].values())).device


def _best(scores: np.ndarray, higher_is_better: bool) -> int:
    """The member with the best mean score (a diverged one, whose mean is not finite, is never best)."""
    means = np.array([row.mean() if np.all(np.isfinite(row)) else np.nan for row in scores])
    if np.all(np.isnan(means)):
        return 0
    return int(np.nanargmax(means) if higher_is_better else np.nanargmin(means))


def _difference(ensemble: np.ndarray, best: np.ndarray):
    """The ensemble minus the best member, paired over the episodes; None where an episode diverged."""
    if not (np.all(np.isfinite(ensemble)) and np.all(np.isfinite(best))):
        return None
    return paired_difference(ensemble, best)


def _cost(members: list[Member], cpu_seconds: list[float], averaging: float, training_cost) -> dict:
    """Printed and returned: the evaluation's CPU seconds per member and in all, and each member's training's."""
    training = [(training_cost(member.path, member.trained_step) if training_cost else None) or "not recorded"
                for member in members]
    total = sum(cpu_seconds) + averaging
    print(f"  cost: evaluation {total:.1f} CPU s in all (members {' + '.join(f'{s:.1f}' for s in cpu_seconds)}, "
          f"averaging {averaging:.2f}); training: " + ", ".join(
              f"{member.path} {_training_text(cost)}" for member, cost in zip(members, training)))
    recorded = [cost["cpu_seconds"] for cost in training if isinstance(cost, dict)]
    return {"evaluation_cpu_seconds": {"members": cpu_seconds, "averaging": averaging, "total": total},
            "training": training,
            "training_cpu_seconds_total": sum(recorded) if len(recorded) == len(training) else "not recorded"}


def _training_text(cost) -> str:
    if not isinstance(cost, dict):
        return cost
    return f"{cost['cpu_seconds']:.0f} CPU s to its step {cost['step']}"
