"""`metalab eval`: a trained checkpoint on held-out episodes, before adaptation and after 1..S steps."""

import dataclasses
import time

import numpy as np
import torch

from metalab import checkpoint
from metalab.config import Config
from metalab.data.episode import fixed_episodes
from metalab.data.support_augment import SupportAugmentedTasks, SupportCopies
from metalab.distributed.group import Group
from metalab.errors import MetalabError
from metalab.evaluation.curvature import episode_curvatures, summarize_curvatures
from metalab.evaluation.evaluate import gathered_scores
from metalab.evaluation.report import diverged, report
from metalab.evaluation.score_files import save_score_file
from metalab.methods.optimization import InnerLoop
from metalab.methods.registry import entry, make_method
from metalab.problem import EVAL_QUERIES, build_problem, image_learner
from metalab.runtime import configure_torch

RENAMED_GROUPS = {"inner_lr": "learned_lr"}  # meta-parameter groups of older checkpoints, by their new names


def load_trained(path, **overrides) -> tuple[Config, dict, dict]:
    """(config, meta-parameters, full state) of a meta-training checkpoint, with config fields overridden.
    A file that is not one is a MetalabError that says what is wrong with it."""
    return trained_from(checkpoint.load(path, "cpu"), path, **overrides)


def trained_from(state: dict, path, **overrides) -> tuple[Config, dict, dict]:
    """load_trained for a checkpoint already read (from `path`)."""
    fix = "pass best.pt or last.pt of a `metalab train` run"
    checkpoint.check_fields(state, {"config": dict, "meta": dict}, path, fix)
    checkpoint.check_tensor_groups(state["meta"], path)
    if "theta" not in state["meta"]:
        raise MetalabError(f"{path} holds no network parameters (meta.theta); {fix}")
    config = config_of(state["config"], path).replace(**{k: v for k, v in overrides.items() if v is not None})
    meta = {RENAMED_GROUPS.get(group, group): params for group, params in state["meta"].items()}
    return config, meta, state


def config_of(fields: dict, path) -> Config:
    """The Config a checkpoint was written with (fields added since then take their defaults)."""
    unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(Config)})
    if unknown:
        raise MetalabError(f"{path}: its config has fields this metalab does not know ({', '.join(map(str, unknown))});"
                           " it comes from another version or program: evaluate it with that one")
    try:
        return Config(**fields)
    except MetalabError as error:
        raise MetalabError(f"{path}: its config is invalid ({error}); pass best.pt or last.pt of a `metalab train` "
                           "run") from error


def meta_on(meta: dict, device) -> dict:
    """Meta-parameters {group: {name: tensor}} moved to `device`."""
    return {group: {name: p.to(device) for name, p in params.items()} for group, params in meta.items()}


class WaysMismatch(MetalabError):
    """A checkpoint's network fits only the number of ways it was trained at, and was asked for another."""


def method_for(config: Config, meta: dict, state: dict, learner, path, device, fix: str):
    """The checkpoint's method on `learner` (moved to `device`), once its parameters are checked to fit the
    learner's network; one that was trained at other ways and cannot serve config.ways is a MetalabError
    ending with `fix`."""
    trained_ways = state["config"].get("ways", Config.ways)
    shapes = {name: p.shape for name, p in learner.model.named_parameters()}
    if trained_ways != config.ways and any(shapes.get(name) != p.shape for name, p in meta["theta"].items()):
        # A network whose parameters do not depend on the number of ways (feedforward + average) can be
        # evaluated at other ways; one with an N-way output layer cannot.
        raise WaysMismatch(f"this checkpoint's network ({config.method}) was trained {trained_ways}-way and its "
                           f"parameters fit only {trained_ways}-way tasks, not {config.ways}-way; {fix}")
    checkpoint.check_shapes(meta["theta"], dict(learner.model.named_parameters()), path, "meta.theta")
    learner.model.to(device)
    return make_method(config, learner)


def image_method(path, ways: int, shots: int, queries: int, fix: str, **overrides) -> tuple[Config, dict, object]:
    """(config, meta on its device, method) of an Omniglot checkpoint made for `ways`-way `shots`-shot tasks of
    `queries` queries per class, without reading any data; a model that cannot serve `ways` classes (an N-way
    output layer, a black-box learner sized for N classes) is a MetalabError ending with `fix`."""
    config, meta, state = load_trained(path, **overrides)
    if config.problem != "omniglot":
        raise MetalabError(f"{path} is a {config.problem} model; these tasks classify Omniglot characters: pass a "
                           "checkpoint trained on Omniglot")
    config = config.replace(ways=ways, shots=shots, queries=queries, val_ways=0)
    device = configure_torch(config.threads, config.device)
    meta = meta_on(meta, device)
    return config, meta, method_for(config, meta, state, image_learner(config), path, device, fix)


def evaluate_checkpoint(path, ways=None, shots=None, queries=None, steps=None, inner_lr=None, episodes=1000,
                        seed=0, part="test", data_dir=None, save_scores=None, device=None, threads=None,
                        curvature=False, group: Group = Group(), within_alphabet: float = 0.0,
                        support: SupportCopies = SupportCopies()) -> dict:
    """Scores of a checkpoint on fixed held-out episodes; with several processes (distributed.group.join) each
    scores its share of the episodes and every rank gets them all, in episode order. Rank 0 prints and saves,
    and alone measures --curvature. within_alphabet: probability that an episode's classes share one alphabet.
    support: copies of each support image added as extra shots (data/support_augment.py)."""
    # val_ways=0: evaluation's episodes, of either part, have the ways asked for or trained with
    config, meta, state = load_trained(path, ways=ways, shots=shots, inner_lr=inner_lr, device=device,
                                       threads=threads, val_ways=0)
    config = config.replace(queries=queries or EVAL_QUERIES[config.problem])
    check_support_copies(config, support)
    device = group.place(configure_torch(config.threads, config.device))
    meta = meta_on(meta, device)
    problem = build_problem(config, data_dir, parts=(part,), held_out_within_alphabet=within_alphabet)
    trained_ways = state["config"].get("ways", Config.ways)
    method = method_for(config, meta, state, problem.learner, path, device,
                        fix=f"evaluate it with --ways {trained_ways} (or train a {config.ways}-way model)")
    steps = method.eval_steps if steps is None else steps
    tasks = problem.tasks[part]
    if support.copies:
        tasks = SupportAugmentedTasks(tasks, support)
    started, cpu_started = time.perf_counter(), time.process_time()
    share = fixed_episodes(tasks, seed, episodes, share=(group.rank, group.size))
    scores = gathered_scores(meta, method, share, steps, group)
    cpu_seconds = time.process_time() - cpu_started  # this process's share: drawing, adapting and scoring
    task = episodes_text(config, within_alphabet)
    if support.copies:
        task += (f", support + {support.text()} of each image "
                 f"({config.ways * config.shots * (1 + support.copies)} adaptation images per task)")
    if group.is_main:
        print(f"{path}: {config.method}, {task}, {episodes} {part} episodes (seed {seed}), "
              f"{time.perf_counter() - started:.0f} s")
    results = {"checkpoint": str(path), "config": dataclasses.asdict(config), "part": part, "episodes": episodes,
               "seed": seed, "within_alphabet": within_alphabet, "cpu_seconds": cpu_seconds,
               "support_augment": dataclasses.asdict(support),
               "metric": problem.learner.metric.name,
               "after_steps": report(scores, list(range(len(scores))), problem.learner.metric, method.step_name,
                                     show=group.is_main)}
    if curvature and group.is_main:
        results["curvature"] = _curvature(meta, method, tasks, seed, episodes, scores)
    if save_scores and group.is_main:
        save_score_file(save_scores, scores)
    return results


def episodes_text(config: Config, within_alphabet: float) -> str:
    """The tasks evaluated, as printed: "5-way 1-shot 15-query", "10-shot sinusoid", ..."""
    task = (f"{config.ways}-way {config.shots}-shot {config.queries}-query" if config.problem == "omniglot"
            else f"{config.shots}-shot {config.problem}")
    return task + (f", within-alphabet with probability {within_alphabet:g}" if within_alphabet else "")


def check_support_copies(config: Config, support: SupportCopies) -> None:
    """--support-augment needs images and a learner that takes a support set of any size."""
    if not support.copies:
        return
    if config.problem != "omniglot":
        raise MetalabError(f"--support-augment makes distorted copies of support images; a {config.problem} model "
                           "has none: drop --support-augment")
    if entry(config.method).fixed_support:
        raise MetalabError(f"{config.method} reads a support set of the fixed length it was built for and cannot take "
                           "extra shots: drop --support-augment (it serves learners that take any number of shots)")


def _curvature(meta, method, tasks, seed: int, episodes: int, scores: np.ndarray) -> dict:
    """Each episode's step curvature alpha * lambda_max at theta and after one inner step (evaluation/curvature.py),
    printed against the episodes that diverged by the last step."""
    if not isinstance(getattr(method, "inner", None), InnerLoop):
        raise MetalabError("--curvature measures the inner loop of a gradient method (maml, fomaml, metasgd, "
                           "learned_update); this checkpoint's method has none")
    values = torch.cat([episode_curvatures(meta, method.learner, method.inner, batch)
                        for batch in fixed_episodes(tasks, seed, episodes)], dim=1)
    lost = diverged(scores, len(scores) - 1, method.learner.metric)
    results = {}
    for where, row in (("theta", values[0]), ("after_one_step", values[1])):
        summary = summarize_curvatures(row, lost)
        print(f"  alpha * lambda_max {where.replace('_', ' ')}: median {summary['median']:.3g}, 90% "
              f"{summary['p90']:.3g}, max {summary['max']:.3g}; above 2 in {summary['above_2']} of {episodes} "
              f"episodes, {summary['above_2_and_diverged']} of them diverged, {summary['at_most_2_but_diverged']} "
              "others diverged")
        results[where] = {**summary, "per_episode": row.tolist()}
    return results
