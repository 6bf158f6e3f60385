"""`metalab eval`: a checkpoint on held-out episodes, before adaptation and after 1..S inner steps."""

import dataclasses
import time

import numpy as np

from metalab.config import BLACK_BOX_METHODS, Config
from metalab.data.tasks import fixed_episodes
from metalab.errors import MetalabError
from metalab.evaluation.evaluate import per_episode_scores
from metalab.evaluation.stats import summarize
from metalab.methods.method import make_method
from metalab.problem import build_problem
from metalab.training import checkpoint
from metalab.training.loop import configure_torch

# Evaluation query-set sizes, whatever the training used: 15 per class is the field's standard for
# Omniglot; 100 points per sinusoid task make each task's MSE a low-noise estimate.
EVAL_QUERIES = {"omniglot": 15, "sinusoid": 100}


def load_trained(path, **overrides):
    """(config, meta-parameters, full state) of a checkpoint, with config fields optionally overridden."""
    state = checkpoint.load(path, "cpu")
    config = Config(**state["config"]).replace(**{k: v for k, v in overrides.items() if v is not None})
    return config, state["meta"], state


def evaluate_checkpoint(path, ways=None, shots=None, queries=None, steps=None, inner_lr=None, episodes=1000,
                        seed=0, part="test", data_dir=None, save_scores=None, device=None, threads=None) -> dict:
    config, meta, state = load_trained(path, ways=ways, shots=shots, inner_lr=inner_lr, device=device,
                                       threads=threads)
    config = config.replace(queries=queries or EVAL_QUERIES[config.problem])
    device = configure_torch(config)
    meta = {g: {n: p.to(device) for n, p in ps.items()} for g, ps in meta.items()}
    problem = build_problem(config, data_dir, parts=(part,))
    trained_ways = state["config"]["ways"]
    shapes = {name: p.shape for name, p in problem.learner.model.named_parameters()}
    if trained_ways != config.ways and any(shapes[name] != p.shape for name, p in meta["theta"].items()):
        # A network whose parameters do not depend on the number of ways (feedforward + average) can be
        # evaluated at other ways; one with an N-way output layer cannot.
        raise MetalabError(f"this checkpoint's network was trained {trained_ways}-way and its parameters fit "
                           f"only {trained_ways} classes; evaluate it with --ways {trained_ways} "
                           f"(or train a {config.ways}-way model)")
    problem.learner.model.to(device)
    method = make_method(config, problem.learner)
    steps = method.eval_steps if steps is None else steps
    started = time.perf_counter()
    scores = per_episode_scores(meta, method, fixed_episodes(problem.tasks[part], seed, episodes), steps)
    seconds = time.perf_counter() - started
    what = "accuracy" if config.problem == "omniglot" else "MSE"
    task = (f"{config.ways}-way {config.shots}-shot {config.queries}-query" if config.problem == "omniglot"
            else f"{config.shots}-shot sinusoid")
    print(f"{path}: {config.method}, {task}, {episodes} {part} episodes (seed {seed}), {seconds:.0f} s")
    results = {"checkpoint": str(path), "config": dataclasses.asdict(config), "part": part, "episodes": episodes,
               "seed": seed, "metric": what, "after_steps": {}}
    for s in range(len(scores)):
        estimate = summarize(scores[s])
        text = estimate.as_percent() if what == "accuracy" else str(estimate)
        diverged = int((~np.isfinite(scores[s])).sum())
        if diverged:
            text = f"diverged (non-finite {what} in {diverged} of {episodes} episodes)"
        when = "after reading the support set" if config.method in BLACK_BOX_METHODS else f"after {s:2d} inner steps"
        print(f"  {when}: {what} {text}")
        results["after_steps"][s] = {"mean": estimate.mean, "ci95": estimate.ci95}
    if save_scores:
        np.save(save_scores, scores)
    return results

