"""Choosing fine-tuning settings on meta-validation episodes: every combination of a grid, scored alike."""

import csv
import dataclasses
import itertools
from pathlib import Path
from typing import Mapping, Sequence

from metalab.atomic import atomic_path
from metalab.config import FinetuneConfig
from metalab.data.episode import TaskDistribution, fixed_episodes
from metalab.errors import MetalabError
from metalab.evaluation.evaluate import per_episode_scores
from metalab.evaluation.stats import mean_ci
from metalab.methods.finetune import FineTuning
from metalab.methods.learner import Learner, Params


def grid_search(learner: Learner, start: Params, val_tasks: TaskDistribution, base: FinetuneConfig,
                grid: Mapping[str, Sequence], episodes: int, seed: int, table: Path | None = None,
                batching: str = "vmap") -> tuple[FinetuneConfig, list[dict]]:
    """Score every combination of the grid's values on `episodes` fixed episodes of `val_tasks` (meta-validation
    tasks: the selection must never see meta-test). grid: {FinetuneConfig field: values}; the values of "steps"
    are scored along a single run of each combination. Prints a line per combination; writes the table as CSV
    to `table` if given. Returns the best config (by the learner's metric) and the table's rows."""
    fields = {field.name for field in dataclasses.fields(FinetuneConfig)}
    if set(grid) - fields:
        raise MetalabError(f"unknown grid fields {sorted(set(grid) - fields)}; choose among {sorted(fields)}")
    if any(len(values) == 0 for values in grid.values()):
        raise MetalabError(f"every grid field needs at least one value, got {dict(grid)}")
    steps = sorted(set(grid.get("steps", [base.steps])))
    varied = [name for name in grid if name != "steps"]
    rows = []
    for values in itertools.product(*(grid[name] for name in varied)):
        combination = dict(zip(varied, values, strict=True))
        config = base.replace(**combination, steps=steps[-1])
        scores = per_episode_scores({"theta": start}, FineTuning(learner, config, batching, scored=tuple(steps)),
                                    fixed_episodes(val_tasks, seed, episodes), steps[-1])
        for count in steps:
            estimate = mean_ci(scores[count])
            rows.append({**dataclasses.asdict(config), "steps": count, "mean": estimate.mean,
                         "ci95": estimate.ci95, "episodes": estimate.n})
        print("  " + ", ".join(f"{k}={v}" for k, v in combination.items()) + " | after "
              + ", ".join(f"{row['steps']} steps {row['mean']:.4f}" for row in rows[-len(steps):]), flush=True)
    best = (max if learner.metric.higher_is_better else min)(rows, key=lambda row: row["mean"])
    if table is not None:
        write_table(rows, table)
    return FinetuneConfig(**{name: best[name] for name in fields}), rows


def write_table(rows: list[dict], path: Path) -> None:
    with atomic_path(Path(path)) as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
