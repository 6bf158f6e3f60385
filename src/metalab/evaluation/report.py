"""`metalab eval`: a checkpoint on held-out episodes, before adaptation and after 1..S inner steps."""

import dataclasses
import time

import numpy as np

from metalab.config import Config
from metalab.data.tasks import fixed_episodes
from metalab.evaluation.evaluate import per_episode_scores
from metalab.evaluation.stats import mean_ci
from metalab.problem import build_problem
from metalab.training import checkpoint
from metalab.training.loop import configure_torch

TEST_SEED_BASE = 0  # evaluation episodes are fixed by (split, ways, shots, queries, seed, count)


def load_trained(path, device="cpu", **overrides):
    """(config, meta, problem) of a checkpoint, with problem settings optionally overridden."""
    state = checkpoint.load(path, device)
    config = Config(**state["config"]).replace(**{k: v for k, v in overrides.items() if v is not None})
    return config, state["meta"], state


def evaluate_checkpoint(path, ways=None, shots=None, queries=None, steps=None, inner_lr=None, episodes=1000,
                        seed=0, part="test", data_dir=None, save_scores=None) -> dict:
    config, meta, state = load_trained(path, ways=ways, shots=shots, queries=queries, inner_lr=inner_lr)
    configure_torch(config)
    steps = config.eval_inner_steps if steps is None else steps
    problem = build_problem(config, data_dir, parts=(part,))
    trained_ways = state["meta"]["theta"][_head_name(meta)].shape[0] if config.problem == "omniglot" else None
    if trained_ways is not None and trained_ways != config.ways:
        from metalab.errors import MetalabError

        raise MetalabError(f"this checkpoint's output layer has {trained_ways} classes; evaluate it with "
                           f"--ways {trained_ways} (or train a {config.ways}-way model)")
    started = time.perf_counter()
    scores = per_episode_scores(meta, problem.learner, problem.inner,
                                fixed_episodes(problem.tasks[part], seed, episodes), steps)
    seconds = time.perf_counter() - started
    what = "accuracy" if config.problem == "omniglot" else "MSE"
    task = (f"{config.ways}-way {config.shots}-shot {config.queries}-query" if config.problem == "omniglot"
            else f"{config.shots}-shot sinusoid")
    print(f"{path}: {config.method}, {task}, {episodes} {part} episodes (seed {seed}), {seconds:.0f} s")
    results = {"checkpoint": str(path), "config": dataclasses.asdict(config), "part": part, "episodes": episodes,
               "seed": seed, "metric": what, "after_steps": {}}
    for s in range(steps + 1):
        estimate = mean_ci(scores[s])
        text = estimate.as_percent() if what == "accuracy" else str(estimate)
        print(f"  after {s:2d} inner steps: {what} {text}")
        results["after_steps"][s] = {"mean": estimate.mean, "ci95": estimate.ci95}
    if save_scores:
        np.save(save_scores, scores)
    return results


def _head_name(meta) -> str:
    return [name for name in meta["theta"] if name.endswith("weight")][-1]
