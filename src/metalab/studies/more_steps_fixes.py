"""Cheap eval-time fixes for learned inner loops run past their trained number of steps (study more-steps).

- rates-clipped (Meta-SGD): it learns one rate per weight for the steps it was trained with; some end up large
  or negative, harmless for one step and explosive over many. Clipped into [0, inner lr] (the rate MAML uses and
  Meta-SGD started from), every step is a descent step no larger than MAML's.
- progress-as-trained (learned update): its network reads progress = step / steps, which meta-training with 1
  step only ever showed at 0; run for S steps it reads k / S instead. Measured against the trained steps (and
  held at the last value training showed), every step reads an input the network was trained on.
- corrected-as-trained (learned update): the network's correction only on the steps it was meta-trained for;
  later steps are plain gradient steps at the inner lr, as MAML's.
None retrains anything.
"""

import dataclasses
from dataclasses import dataclass
from typing import Callable

import torch

from metalab.methods.method import MetaParams, Method
from metalab.studies.models import StudyModel


@dataclass(frozen=True)
class Fix:
    applies_to: Callable[[StudyModel], bool]
    meta: Callable[[StudyModel], MetaParams] = lambda model: model.meta  # the checkpoint's, fixed
    method: Callable[[StudyModel], Method] = lambda model: model.method


def clipped_rates(model: StudyModel) -> MetaParams:
    """Meta-SGD's learned rates clipped into [0, inner_lr]; every other group as trained."""
    rates = {name: torch.clamp(rate, 0.0, model.config.inner_lr) for name, rate in model.meta["learned_lr"].items()}
    return {**model.meta, "learned_lr": rates}


def progress_as_trained(model: StudyModel) -> Method:
    """The learned update whose network reads step / (meta-training steps), held below 1."""
    inner = dataclasses.replace(model.method.inner, progress_steps=model.config.inner_steps)
    return dataclasses.replace(model.method, inner=inner)


def corrected_as_trained(model: StudyModel) -> Method:
    """The learned update that adds its network's correction on the meta-training steps only."""
    inner = dataclasses.replace(model.method.inner, corrected_steps=model.config.inner_steps)
    return dataclasses.replace(model.method, inner=inner)


FIXES = {"rates-clipped": Fix(lambda model: "learned_lr" in model.meta, meta=clipped_rates),
         "progress-as-trained": Fix(lambda model: "update_net" in model.meta, method=progress_as_trained),
         "corrected-as-trained": Fix(lambda model: "update_net" in model.meta, method=corrected_as_trained)}
