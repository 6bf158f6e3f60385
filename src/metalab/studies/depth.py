"""Study `depth` (Finn & Levine, "Meta-Learning and Universality", ICLR 2018, section 7.3): MAML with 1 to 5 hidden
layers at a fixed parameter count, the count of one hidden layer of 250 units, on cubic-polynomial regression
(coefficients uniform in (-1, 1), x in (-3, 3), 40 shots), against black-box learners of the same count.

Each deeper network's width is the one whose parameter count comes nearest the budget (studies/parameter_budget.py);
so are each black-box learner's two widths (its input embedding's units and its own width, kept near each
other). Learners whose smallest size is already far above the budget (Meta Networks, the memory-augmented
network) are left out; the report lists every count. All are scored on the same fixed episodes after 5 inner steps (as trained).
"""

from pathlib import Path

from metalab.config import Config, preset
from metalab.models.networks import mlp_parameters
from metalab.problem import EVAL_QUERIES, regression_tasks
from metalab.studies.depth_report import depth_report
from metalab.studies.parameter_budget import model_parameters, width_for_budget
from metalab.studies.regression_cells import model_names, regression_cell
from metalab.studies.study import Cell, StudySettings, train_run

SHOTS = 40
DEPTHS = (1, 2, 3, 4, 5)
BUDGET = mlp_parameters(1, 250, 1)  # 751: one hidden layer of 250 units, 1 input, 1 output
STEPS = 5  # inner steps, in training and at test time
BLACK_BOX = ("average", "lstm", "snail")  # learners whose size one width sets, down to the budget


def _regression(base: Config) -> Config:
    return base.replace(problem="polynomial", shots=SHOTS, queries=SHOTS, sequence_length=0)


def maml_config(depth: int) -> Config:
    """MAML with `depth` hidden layers at the budget. Inner lr 0.001 and Adam 1e-3, 25 tasks a step: the
    sinusoid preset's (the authors' code), not tuned here; 5 inner steps as the extrapolation study."""
    width = width_for_budget(lambda w: mlp_parameters(1, w, depth), BUDGET)
    return _regression(preset("sinusoid-maml")).replace(hidden=width, hidden_layers=depth, inner_steps=STEPS,
                                                        eval_inner_steps=STEPS)


def black_box_config(method: str) -> Config:
    """A black-box learner at the budget: the embedding's units (`hidden`) and the learner's `width` nearest
    one common width w, each within 4 of it, whose count comes nearest the budget (then the most alike)."""
    base = _regression(preset("sinusoid-snail" if method == "snail" else "sinusoid-average").replace(method=method))
    common = width_for_budget(lambda w: model_parameters(base.replace(hidden=w, width=w)), BUDGET)
    candidates = []
    for hidden in range(max(1, common - 4), common + 5):
        width = width_for_budget(lambda w: model_parameters(base.replace(hidden=hidden, width=w)), BUDGET,
                                 range(max(1, common - 4), common + 5))
        gap = abs(model_parameters(base.replace(hidden=hidden, width=width)) - BUDGET)
        candidates.append((gap, abs(hidden - width), hidden, width))
    _, _, hidden, width = min(candidates)
    return base.replace(hidden=hidden, width=width)


def learners() -> dict[str, Config]:
    """Every learner of the study by its run folder's name."""
    return {**{f"maml-{d}-layers": maml_config(d) for d in DEPTHS}, **{m: black_box_config(m) for m in BLACK_BOX}}


TRAIN_STEPS = {"tiny": 4, "quick": 4000, "full": 30000}  # meta-training steps of every learner


def training_config(config: Config, budget: str, threads: int) -> Config:
    steps = TRAIN_STEPS[budget]
    every = max(1, steps // 5)
    return config.replace(steps=steps, val_every=every, checkpoint_every=every, threads=threads,
                          val_episodes=10 if budget == "tiny" else 200, log_every=min(100, steps))


def describe(config: Config) -> str:
    """A checkpoint's name in the report: maml-3x18 (3 hidden layers of 18 units), or the black-box method."""
    return f"{config.method}-{config.hidden_layers}x{config.hidden}" if config.method == "maml" else config.method


def evaluation_tasks(config: Config):
    return regression_tasks(config.replace(problem="polynomial", shots=SHOTS, queries=EVAL_QUERIES["polynomial"]))


class Depth:
    name = "depth"
    summary = "MAML with 1-5 hidden layers at a fixed parameter count on cubic polynomials, and black-box learners"

    def train(self, budget: str, out: Path, threads: int, data_dir=None) -> list[Path]:
        return [train_run(training_config(config, budget, threads), Path(out) / name)
                for name, config in learners().items()]

    def cells(self, checkpoints: list[Path], settings: StudySettings) -> list[Cell]:
        return [Cell(name, lambda path=path, name=name: regression_cell(path, settings, evaluation_tasks, (STEPS,),
                                                                        {"model": name}), inputs=(path,))
                for name, path in model_names(checkpoints, describe).items()]

    def report(self, results: dict[str, dict], out: Path) -> str:
        return depth_report(results, Path(out), BUDGET)
