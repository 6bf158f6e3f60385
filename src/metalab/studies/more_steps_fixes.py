"""Cheap eval-time fixes for learned inner loops run past their trained number of steps (study more-steps).

Meta-SGD learns one rate per weight for the steps it was trained with; some rates end up large or negative,
harmless for one step and explosive over many. Clipping them into [0, inner lr] (the rate MAML uses and
Meta-SGD started from) keeps every step a descent step no larger than MAML's, without retraining.
"""

from dataclasses import dataclass
from typing import Callable

import torch

from metalab.methods.method import MetaParams
from metalab.studies.models import StudyModel


@dataclass(frozen=True)
class Fix:
    applies_to: Callable[[StudyModel], bool]
    meta: Callable[[StudyModel], MetaParams]  # the checkpoint's meta-parameters, fixed


def clipped_rates(model: StudyModel) -> MetaParams:
    """Meta-SGD's learned rates clipped into [0, inner_lr]; every other group as trained."""
    rates = {name: torch.clamp(rate, 0.0, model.config.inner_lr) for name, rate in model.meta["learned_lr"].items()}
    return {**model.meta, "learned_lr": rates}


FIXES = {"rates-clipped": Fix(lambda model: "learned_lr" in model.meta, clipped_rates)}
