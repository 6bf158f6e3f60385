"""What the regression studies' cells share: a name per checkpoint, and a checkpoint's per-episode MSE on a
task distribution after chosen numbers of steps, as a cell's result."""

from pathlib import Path
from typing import Callable

import numpy as np

from metalab.config import Config
from metalab.data.episode import TaskDistribution
from metalab.evaluation.checkpoints import load_trained
from metalab.evaluation.report import diverged
from metalab.methods.learner import MSE
from metalab.studies.models import episode_scores, load_study_model
from metalab.studies.study import StudySettings
from metalab.studies.tables import estimate_row, paired_row


def model_names(checkpoints: list[Path], describe: Callable[[Config], str] = lambda c: c.method) -> dict[str, Path]:
    """A file-name-safe name per checkpoint, describe(its config) (default: the method), with the run folder's
    name added when two checkpoints would share one."""
    described = [describe(load_trained(path)[0]) for path in checkpoints]
    names = [d if described.count(d) == 1 else f"{d}-{''.join(c if c.isalnum() else '-' for c in p.parent.name)}"
             for d, p in zip(described, checkpoints)]
    return dict(zip(names, checkpoints))


def regression_cell(path: Path, settings: StudySettings, tasks_for: Callable[[Config], TaskDistribution],
                    steps: tuple[int, ...], fields: dict) -> dict:
    """The MSE of the checkpoint at `path` on fixed episodes of tasks_for(its config), after each of `steps`
    adaptation steps (a method without steps: once, as steps 0): {"rows": one per step, `fields` and the
    config's method and size in each, "scores": per-episode MSE after steps[0], "scores_after": {step: list},
    "by_step": {mean, ci95, n} after 0..max(steps)}."""
    model = load_study_model(path, settings, part="test")
    most = max(steps) if model.method.eval_steps else 0
    scores = episode_scores(model, tasks_for(model.config), settings, steps=most)
    after = {s: scores[min(s, len(scores) - 1)] for s in (steps if most else (0,))}
    size = {"method": model.config.method, "hidden": model.config.hidden, "width": model.config.width,
            "hidden_layers": model.config.hidden_layers,
            "parameters": sum(p.numel() for p in model.meta["theta"].values())}
    rows = [{**fields, **size, "steps": s, **estimate_row(values), "median": median(values),
             "diverged": int(diverged(scores, min(s, len(scores) - 1), MSE).sum())} for s, values in after.items()]
    return {"rows": rows, "scores": next(iter(after.values())).tolist(),
            "scores_after": {str(s): values.tolist() for s, values in after.items()},
            "by_step": [estimate_row(row) for row in scores]}


def median(values: np.ndarray) -> float:
    """The median, a NaN (a diverged episode) counted as infinite."""
    return float(np.median(np.where(np.isnan(values), np.inf, values)))


def paired_against(results: dict[str, dict], key: str, reference_key: str, step: int, reference_step: int) -> dict:
    """Cell `key`'s MSE after `step` steps (its only row for a method without steps) minus the reference
    cell's after `reference_step`, on the same episodes: {diff_mean, diff_ci95}."""
    values = results[key]["scores_after"]
    reference = results[reference_key]["scores_after"][str(reference_step)]
    return paired_row(values.get(str(step), values.get("0")), reference)
