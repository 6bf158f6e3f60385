"""Study `extrapolation-omniglot`: N-way K-shot meta-test tasks whose drawings are sheared or scaled.

Finn & Levine ("Meta-Learning and Universality", ICLR 2018) ask how learners degrade as test tasks move away
from meta-training: every drawing of a task (support and query alike) gets the same affine distortion about
the centre of the 105x105 drawing before it is shrunk to 28x28 (data/affine.py says exactly what shear and
scale do; scale 2 is the drawing magnified twice about its centre, the ink beyond the frame cropped). Each
distortion is decoded once into its own cache (data/omniglot.py's Preprocessing), holding the same characters
in the same order, so episode i is the same task (characters, drawers, labels) at every distortion and for
every method. One cell per distortion, holding every checkpoint's scores and its paired difference with MAML
on the same episodes.
"""

import math
from pathlib import Path

from metalab.config import preset
from metalab.data.classification import ClassificationTasks, omniglot_tasks
from metalab.data.omniglot import Preprocessing
from metalab.data.splits import load_split_data
from metalab.errors import MetalabError
from metalab.problem import EVAL_QUERIES
from metalab.studies.extrapolation_report import write_report
from metalab.studies.models import StudyModel, episode_scores, load_study_model, trained_with_augment
from metalab.studies.study import Cell, StudySettings, budgeted, train_run
from metalab.studies.tables import estimate_row, paired_row

PI = math.pi
SHEARS = (-PI / 4, -PI / 6, -PI / 8, 0.0, PI / 8, PI / 6, PI / 4)  # radians
SCALES = (1 / 3, 1 / 2, 2 / 3, 1.0, 1.5, 2.0)
TINY_SHEARS, TINY_SCALES = (0.0, PI / 4), (1 / 3, 1.0)  # CI: two distortions beside the undistorted tasks

# What --train trains (no --augment: its random shears and scales would put the test shifts inside training; no
# elastic distortions either), meta-steps by budget. Quick: about what 2 CPU cores do in 30 minutes with the evaluation.
MODELS = {"maml": "omniglot-5w1s-maml", "snail": "omniglot-5w1s-snail", "metanet": "omniglot-5w1s-metanet"}
STEPS = {"tiny": {"maml": 2, "snail": 2, "metanet": 2}, "quick": {"maml": 1000, "snail": 600, "metanet": 600},
         "full": {}}  # full: the presets' own steps


def distortions(budget: str) -> list[tuple[float, float]]:
    """(shear, scale) of each cell: the shear sweep at scale 1, then the scale sweep at shear 0 (the
    undistorted drawing once)."""
    shears, scales = (TINY_SHEARS, TINY_SCALES) if budget == "tiny" else (SHEARS, SCALES)
    return [(shear, 1.0) for shear in shears] + [(0.0, scale) for scale in scales if scale != 1]


def distortion_key(shear: float, scale: float) -> str:
    return f"shear={shear:+.4f}__scale={scale:.4f}"


def distorted_tasks(split: str, ways: int, shots: int, shear: float, scale: float, data_dir=None) -> ClassificationTasks:
    """The study's meta-test tasks at one distortion: `ways`-way `shots`-shot, EVAL_QUERIES queries per class,
    unrotated, every drawing sheared by `shear` radians and scaled by `scale` before the resize to 28x28."""
    data, parts = load_split_data(split, data_dir, settings=Preprocessing(shear=shear, scale=scale))
    return omniglot_tasks(data, parts, "test", ways, shots, EVAL_QUERIES["omniglot"], rotations=(0,))


class ExtrapolationOmniglot:
    name = "extrapolation-omniglot"
    summary = "accuracy on sheared and scaled Omniglot drawings, every method against MAML on the same episodes"

    def train(self, budget: str, out: Path, threads: int, data_dir=None) -> list[Path]:
        checkpoints = []
        for model, name in MODELS.items():
            config = preset(name).replace(threads=threads, augment=0.0, elastic_alpha=0.0)
            config = budgeted(config, STEPS[budget].get(model, config.steps), budget)
            checkpoints.append(train_run(config, Path(out) / model, data_dir))
        return checkpoints

    def cells(self, checkpoints: list[Path], settings: StudySettings) -> list[Cell]:
        models = [load_study_model(path, settings) for path in checkpoints]
        tasks_shape = {(m.config.problem, m.config.split, m.config.ways, m.config.shots) for m in models}
        if len(tasks_shape) > 1 or any(m.config.problem != "omniglot" for m in models):
            raise MetalabError(f"{self.name} compares Omniglot checkpoints on the same tasks; these were trained "
                               f"on {sorted(tasks_shape)} (problem, split, ways, shots): pass checkpoints of one")
        _, split, ways, shots = tasks_shape.pop()
        return [Cell(distortion_key(shear, scale),
                     lambda shear=shear, scale=scale: _distortion_cell(models, split, ways, shots, shear, scale,
                                                                       settings))
                for shear, scale in distortions(settings.budget)]

    def report(self, results: dict[str, dict], out: Path) -> str:
        return write_report(results, Path(out))


def _distortion_cell(models: list[StudyModel], split: str, ways: int, shots: int, shear: float, scale: float,
                     settings: StudySettings) -> dict:
    """Every checkpoint's per-episode accuracy on the same distorted meta-test episodes, and its paired difference
    with the MAML checkpoint trained alike (with or without --augment): the first such one listed."""
    tasks = distorted_tasks(split, ways, shots, shear, scale, settings.data_dir)
    scores = [episode_scores(model, tasks, settings)[-1] for model in models]
    rows = []
    for model, own in zip(models, scores):
        reference = next((s for m, s in zip(models, scores) if m.config.method == "maml"
                          and trained_with_augment(m) == trained_with_augment(model)), None)
        rows.append({"checkpoint": str(model.path), "label": model.label, "method": model.config.method,
                     "augment": model.config.augment, "trained_steps": model.config.steps,
                     "eval_steps": model.method.eval_steps, "shear": shear, "scale": scale, **estimate_row(own),
                     **(paired_row(own, reference) if reference is not None else {})})
    return {"rows": rows, "scores": {str(m.path): s.tolist() for m, s in zip(models, scores)}}
