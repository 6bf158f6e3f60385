"""Resuming a run from its last.pt: the same run's settings, tensors of the model's shapes, exact state."""

import dataclasses
from pathlib import Path

import torch

from metalab import checkpoint
from metalab.config import Config
from metalab.errors import MetalabError
from metalab.evaluation.checkpoints import trained_from
from metalab.training.optimizer import Adam

# Fields that never change what a run computes: a resume may change them (a moved folder, more threads).
NOT_COMPARED = ("threads", "device", "out_dir", "log_every", "checkpoint_every")
FIX = "pass last.pt of a `metalab train` run, or start again with --overwrite"


def restore(state: dict, path: Path, config: Config, meta: dict, optimizer: Adam) -> tuple[int, float | None]:
    """Load the checkpoint `state` read from `path` into meta (in place), the optimizer and torch's RNG;
    (step, best)."""
    _, saved_meta, state = trained_from(state, path)
    checkpoint.check_fields(state, checkpoint.META_TRAINING_FIELDS, path, FIX)
    differences = config_differences(Config(**state["config"]), config)
    if differences:
        raise MetalabError(f"{path} was written with other settings: {'; '.join(differences)}; resume with the "
                           "checkpoint's settings, or train into another --out-dir")
    checkpoint.check_shapes(saved_meta, {g: {n: p.detach() for n, p in ps.items()} for g, ps in meta.items()}, path)
    for group, params in saved_meta.items():
        for name, value in params.items():
            meta[group][name].data.copy_(value)
    try:
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"].cpu())
    except (ValueError, KeyError, TypeError, AttributeError, RuntimeError) as error:
        raise MetalabError(f"{path}: its optimizer or RNG state does not fit this run ({error}); "
                           f"{FIX}") from error
    if state["step"] < 0 or state["step"] > config.steps:
        raise MetalabError(f"{path} is at step {state['step']}, outside this run's 0..{config.steps}; {FIX}")
    return state["step"], state["best"]


def config_differences(saved: Config, config: Config) -> list[str]:
    """'--field SAVED (checkpoint) vs NEW' for each field that changes a run's results and differs."""
    return [f"--{f.name.replace('_', '-')} {getattr(saved, f.name)} (checkpoint) vs {getattr(config, f.name)}"
            for f in dataclasses.fields(Config)
            if f.name not in NOT_COMPARED and getattr(saved, f.name) != getattr(config, f.name)]
