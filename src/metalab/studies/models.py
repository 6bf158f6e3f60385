"""A trained checkpoint made ready for a study's cells, and its per-episode scores on fixed episodes."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metalab.config import Config
from metalab.data.episode import TaskDistribution, fixed_episodes
from metalab.evaluation.checkpoints import load_trained, meta_on, method_for
from metalab.evaluation.evaluate import per_episode_scores
from metalab.methods.learner import Learner
from metalab.methods.method import MetaParams, Method
from metalab.problem import EVAL_QUERIES, build_problem
from metalab.runtime import configure_torch
from metalab.studies.study import StudySettings


@dataclass
class StudyModel:
    """A checkpoint's method, meta-parameters (on the settings' device) and held-out tasks of one part."""

    path: Path
    config: Config  # as trained, with the evaluation's query count and the settings' device and threads
    meta: MetaParams
    method: Method
    learner: Learner
    tasks: TaskDistribution  # the part's tasks, EVAL_QUERIES queries per class (or points)

    @property
    def label(self) -> str:
        """The method's name and the run folder, e.g. "maml (maml-5w1s-1000)"."""
        return f"{self.config.method} ({self.path.parent.name})"


def load_study_model(path, settings: StudySettings, part: str = "test", **overrides) -> StudyModel:
    """The checkpoint at `path` with config fields overridden (e.g. inner_lr), ready to score `part` tasks."""
    path = Path(path)
    config, meta, state = load_trained(path, device=settings.device, threads=settings.threads, **overrides)
    config = config.replace(queries=EVAL_QUERIES[config.problem])
    device = configure_torch(config.threads, config.device)
    problem = build_problem(config, settings.data_dir, parts=(part,))
    method = method_for(config, meta, state, problem.learner, path, device, fix="pass a checkpoint of those ways")
    meta = meta_on(meta, device)
    return StudyModel(path, config, meta, method, problem.learner, problem.tasks[part])


def episode_scores(model: StudyModel, tasks: TaskDistribution, settings: StudySettings, steps: int | None = None,
                   meta: MetaParams | None = None) -> np.ndarray:
    """[rows, episodes] float64: scores after 0..steps adaptation steps (default: the method's eval_steps; one
    row for a method without steps) on fixed_episodes(tasks, settings.seed, settings.episodes), the same
    episodes for every method. `meta` replaces the checkpoint's meta-parameters (e.g. a random init)."""
    steps = model.method.eval_steps if steps is None else steps
    episodes = fixed_episodes(tasks, settings.seed, settings.episodes)
    return per_episode_scores(model.meta if meta is None else meta, model.method, episodes, steps)


def trained_with_augment(model: StudyModel) -> bool:
    """Whether the checkpoint's meta-training tasks were randomly sheared and scaled (--augment)."""
    return model.config.augment > 0
