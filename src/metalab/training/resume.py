"""Resuming a run from its last.pt: the same run's settings, tensors of the model's shapes, exact state."""

import dataclasses
from pathlib import Path

import torch

from metalab import checkpoint
from metalab.config import Config
from metalab.errors import MetalabError
from metalab.evaluation.checkpoints import trained_from

# Fields that never change what a run computes: a resume may change them (a moved folder, more threads).
NOT_COMPARED = ("threads", "device", "out_dir", "log_every", "checkpoint_every")
FIX = "pass last.pt of a `metalab train` run, or start again with --overwrite"


def restore(state: dict, path: Path, config: Config, meta: dict, optimizer, scheduler) -> tuple[int, float | None]:
    """Load the checkpoint `state` read from `path` into meta (in place), the optimizer and the scheduler, and
    torch's RNG; (step, best)."""
    _, saved_meta, state = trained_from(state, path)
    checkpoint.check_fields(state, checkpoint.META_TRAINING_FIELDS, path, FIX)
    differences = config_differences(Config(**state["config"]), config)
    if differences:
        raise MetalabError(f"{path} was written with other settings: {'; '.join(differences)}; resume with the "
                           "checkpoint's settings, or train into another --out-dir")
    checkpoint.check_shapes(saved_meta, {g: {n: p.detach() for n, p in ps.items()} for g, ps in meta.items()}, path)
    _check_optimizer(state["optimizer"], [p for ps in meta.values() for p in ps.values()], path)
    for group, params in saved_meta.items():
        for name, value in params.items():
            meta[group][name].data.copy_(value)
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"].cpu())
    except (ValueError, KeyError, TypeError, RuntimeError) as error:
        raise MetalabError(f"{path}: its optimizer, scheduler or RNG state does not fit this run ({error}); "
                           f"{FIX}") from error
    if state["step"] < 0 or state["step"] > config.steps:
        raise MetalabError(f"{path} is at step {state['step']}, outside this run's 0..{config.steps}; {FIX}")
    return state["step"], state["best"]


def config_differences(saved: Config, config: Config) -> list[str]:
    """'--field SAVED (checkpoint) vs NEW' for each field that changes a run's results and differs."""
    return [f"--{f.name.replace('_', '-')} {getattr(saved, f.name)} (checkpoint) vs {getattr(config, f.name)}"
            for f in dataclasses.fields(Config)
            if f.name not in NOT_COMPARED and getattr(saved, f.name) != getattr(config, f.name)]


def _check_optimizer(state: dict, params: list[torch.Tensor], path) -> None:
    """Adam's state fits the parameters: load_state_dict checks the counts, not the shapes of the moments."""
    groups, per_param = state.get("param_groups"), state.get("state")
    if not isinstance(groups, list) or not isinstance(per_param, dict):
        raise MetalabError(f"{path}: 'optimizer' is not an optimizer's state; {FIX}")
    indices = [i for group in groups if isinstance(group, dict) for i in group.get("params", [])]
    if len(indices) != len(params):
        raise MetalabError(f"{path}: the optimizer's state holds {len(indices)} parameters, the model "
                           f"{len(params)}; {FIX}")
    for index, param in zip(indices, params):
        for key, value in (per_param.get(index) or {}).items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != param.shape:
                raise MetalabError(f"{path}: optimizer.state.{index}.{key} has shape {list(value.shape)} but its "
                                   f"parameter {list(param.shape)}; {FIX}")
