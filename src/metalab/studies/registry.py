"""The studies `metalab study NAME` runs, by name: one line each."""

from metalab.errors import MetalabError
from metalab.studies.alphabet_shift import AlphabetShift
from metalab.studies.depth import Depth
from metalab.studies.extrapolation_omniglot import ExtrapolationOmniglot
from metalab.studies.extrapolation_sinusoid import ExtrapolationSinusoid
from metalab.studies.more_steps import MoreSteps
from metalab.studies.study import Study

STUDIES: dict[str, Study] = {
    "alphabet-shift": AlphabetShift(),
    "extrapolation-omniglot": ExtrapolationOmniglot(),
    "more-steps": MoreSteps(),
    "extrapolation-sinusoid": ExtrapolationSinusoid(),
    "depth": Depth(),
}


def study_named(name: str) -> Study:
    if name not in STUDIES:
        raise MetalabError(f"unknown study {name!r}; choose one of {', '.join(sorted(STUDIES)) or '(none yet)'} "
                           "(`metalab study --list`)")
    return STUDIES[name]
