"""The settings and cells of study `extrapolation-sinusoid` (studies/extrapolation_sinusoid.py): learners
meta-trained on sinusoids A sin(x - phase) with A in [0.1, 5] and phase in [0, pi], tested at 5 shots on
amplitudes and phases beyond, as curves (Finn & Levine, "Meta-Learning and Universality", ICLR 2018, section
7.1): does MAML, which still runs gradient descent at test time, degrade more gently than the black-box learners?

Every checkpoint is scored on the same tasks: each bin (and each region) is a SinusoidTasks of its own ranges,
built from a Config's amplitude and phase fields, whose episodes come from the settings' seed alone. MAML is
scored after 5 and 100 inner steps; a black-box learner has no steps (one score per episode).
"""

import math
from dataclasses import dataclass
from pathlib import Path

from metalab.config import Config, preset
from metalab.methods.registry import entry
from metalab.problem import EVAL_QUERIES, regression_tasks
from metalab.studies.regression_cells import regression_cell
from metalab.studies.study import StudySettings

SHOTS = 5
STEPS = (5, 100)  # MAML's inner steps at test time: as trained, and many more
TRAIN_AMPLITUDE, TRAIN_PHASE = (0.1, 5.0), (0.0, math.pi)  # the training distribution (Config's defaults)


@dataclass(frozen=True)
class Bin:
    """Test tasks with A ~ U[amplitude] and phase ~ U[phase]; `axis` says which one the curve moves along."""

    axis: str  # "amplitude", "phase" (a point of a curve) or "region" (a summary range)
    name: str  # file-name safe: "5-6", "3.142-3.927", "amplitude-5-10"
    amplitude: tuple[float, float]
    phase: tuple[float, float]

    @property
    def centre(self) -> float:
        low, high = self.phase if self.axis == "phase" else self.amplitude
        return (low + high) / 2


def _edges(values) -> list[tuple[float, float]]:
    return list(zip(values[:-1], values[1:]))


# The evaluation settings of the study. Curves over both sides of the training boundary (A = 5, phase = pi),
# the other variable held in its training range; regions as the authors summarize them.
AMPLITUDE_BINS = [Bin("amplitude", f"{a:g}-{b:g}", (a, b), TRAIN_PHASE)
                  for a, b in _edges([0.1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10])]
PHASE_BINS = [Bin("phase", f"{a:.4g}-{b:.4g}", TRAIN_AMPLITUDE, (a, b))
              for a, b in _edges([k * math.pi / 4 for k in range(9)])]
REGIONS = [Bin("region", "in-distribution", TRAIN_AMPLITUDE, TRAIN_PHASE),
           Bin("region", "amplitude-5-10", (5.0, 10.0), TRAIN_PHASE),
           Bin("region", "phase-pi-2pi", TRAIN_AMPLITUDE, (math.pi, 2 * math.pi))]
TINY_BINS = [AMPLITUDE_BINS[0], AMPLITUDE_BINS[-1], PHASE_BINS[0], PHASE_BINS[-1], *REGIONS]


def _maml() -> Config:
    """The authors' MAML: 5 shots, 2 hidden layers of 100, 5 inner steps, a learned bias transformation (10 numbers),
    and the MAML authors' code's inner lr 0.001 (docs/results.md). At the MAML paper's 0.01, meta-training with 5
    inner steps diverged (its meta-gradient became infinite; docs/results.md)."""
    return preset("sinusoid-maml").replace(shots=SHOTS, hidden=100, hidden_layers=2, bias_transformation=10,
                                           inner_lr=0.001, inner_steps=5, eval_inner_steps=5)


# The learners and their meta-training steps per budget; every one trained at 5 shots on the training ranges.
LEARNERS = {"maml": _maml, "snail": lambda: preset("sinusoid-snail"),
            "metanet": lambda: preset("sinusoid-metanet").replace(shots=SHOTS),
            "average": lambda: preset("sinusoid-average").replace(shots=SHOTS)}
TRAIN_STEPS = {"tiny": dict.fromkeys(LEARNERS, 4),
               "quick": {"maml": 8000, "snail": 1500, "metanet": 1000, "average": 4000},
               "full": {"maml": 40000, "snail": 5000, "metanet": 5000, "average": 20000}}


def training_config(learner: str, budget: str, threads: int) -> Config:
    steps = TRAIN_STEPS[budget][learner]
    every = max(1, steps // 5)
    return LEARNERS[learner]().replace(steps=steps, val_every=every, checkpoint_every=every, threads=threads,
                                       val_episodes=10 if budget == "tiny" else 200, log_every=min(100, steps))


def describe(config: Config) -> str:
    """A checkpoint's name in the report: maml-lr0.001 (a gradient method and its inner lr), or the method."""
    return config.method if entry(config.method).blackbox else f"{config.method}-lr{config.inner_lr:g}"


def shifted_tasks(config: Config, where: Bin):
    """The study's test tasks of one bin: SHOTS support points, EVAL_QUERIES query points, the bin's ranges."""
    return regression_tasks(config.replace(
        problem="sinusoid", shots=SHOTS, queries=EVAL_QUERIES["sinusoid"], amplitude_min=where.amplitude[0],
        amplitude_max=where.amplitude[1], phase_min=where.phase[0], phase_max=where.phase[1]))


def score(path: Path, name: str, where: Bin, settings: StudySettings) -> dict:
    """One cell: the checkpoint's MSE on the bin's tasks after STEPS inner steps (or once, without steps)."""
    fields = {"model": name, "axis": where.axis, "bin": where.name, "amplitude_low": where.amplitude[0],
              "amplitude_high": where.amplitude[1], "phase_low": where.phase[0], "phase_high": where.phase[1],
              "x": where.centre}
    return regression_cell(path, settings, lambda config: shifted_tasks(config, where), STEPS, fields)
