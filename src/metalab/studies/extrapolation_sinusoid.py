"""Study `extrapolation-sinusoid` (Finn & Levine 2018, section 7.1): the learners of studies/sinusoid_shift.py,
meta-trained on A in [0.1, 5] and phase in [0, pi], scored at 5 shots on bins of amplitude and phase beyond;
the report in studies/sinusoid_shift_report.py."""

from pathlib import Path

from metalab.studies.regression_cells import model_names
from metalab.studies.sinusoid_shift import (
    AMPLITUDE_BINS,
    LEARNERS,
    PHASE_BINS,
    REGIONS,
    TINY_BINS,
    describe,
    score,
    training_config,
)
from metalab.studies.sinusoid_shift_report import sinusoid_shift_report
from metalab.studies.study import Cell, StudySettings, train_run


class ExtrapolationSinusoid:
    name = "extrapolation-sinusoid"
    summary = "sinusoids beyond the trained amplitudes [0.1, 5] and phases [0, pi]: MSE curves, 5 shots"

    def train(self, budget: str, out: Path, threads: int, data_dir=None) -> list[Path]:
        return [train_run(training_config(learner, budget, threads), Path(out) / learner) for learner in LEARNERS]

    def cells(self, checkpoints: list[Path], settings: StudySettings) -> list[Cell]:
        bins = TINY_BINS if settings.budget == "tiny" else [*AMPLITUDE_BINS, *PHASE_BINS, *REGIONS]
        return [Cell(f"{name}__{b.axis}={b.name}", lambda path=path, name=name, b=b: score(path, name, b, settings),
                     inputs=(path,))
                for name, path in model_names(checkpoints, describe).items() for b in bins]

    def report(self, results: dict[str, dict], out: Path) -> str:
        return sinusoid_shift_report(results, Path(out))
