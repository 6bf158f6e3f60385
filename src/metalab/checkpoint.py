"""Checkpoints: one file with everything needed to resume exactly, written atomically, read without running code.

A checkpoint holds only plain data: tensors, dicts, lists, tuples, strings, numbers, booleans and None (the
RNG state is a uint8 tensor). So it loads with torch.load(weights_only=True), which builds nothing else: a
crafted file cannot run code when it is read.
"""

import io
import math
import pickle
import zipfile
from pathlib import Path

import torch

from metalab.atomic import atomic_path
from metalab.errors import MetalabError

# The fields of a meta-training checkpoint (training/loop.py) and their types.
META_TRAINING_FIELDS = {"config": dict, "meta": dict, "step": int, "best": (float, int, type(None)),
                        "optimizer": dict, "torch_rng": torch.Tensor}


def save(path: Path, state: dict) -> None:
    """Write `state` atomically; refuse one that holds a non-finite number (a diverged run is never saved)."""
    path = Path(path)
    bad = nonfinite_fields(state)
    if bad:
        raise MetalabError(f"refusing to write {path}: {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''} "
                           "hold non-finite values (the run diverged); lower the learning rates")
    # Serialized in memory first: torch's writer reports a write that stops part-way (a filling disk) as a
    # RuntimeError about stream positions; one write() of the bytes surfaces it as the OSError it is.
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(buffer.getbuffer())


def load(path: Path, device="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        what = "a folder" if path.is_dir() else "no checkpoint"
        raise MetalabError(f"{what} at {path}; train first (`metalab train`) or pass the path of a .pt file")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, ValueError, KeyError, TypeError,
            AttributeError, IndexError, zipfile.BadZipFile, UnicodeDecodeError) as error:
        # weights_only refuses anything but plain data: a file that wants to build other objects lands here.
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise MetalabError(f"{path} is not a readable metalab checkpoint ({reason[:200]}); use another "
                           "checkpoint (best.pt or last.pt of the run) or train again") from error
    if not isinstance(state, dict):
        raise MetalabError(f"{path} holds a {type(state).__name__}, not a metalab checkpoint; pass best.pt or "
                           "last.pt of a `metalab train` run")
    return state


def check_fields(state: dict, fields: dict, path, fix: str) -> None:
    """Each of `fields` (name -> type or tuple of types) is in `state` with that type, else a MetalabError."""
    for name, kind in fields.items():
        if name not in state:
            raise MetalabError(f"{path} has no {name!r}: it is not a complete metalab checkpoint; {fix}")
        value = state[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise MetalabError(f"{path}: {name!r} is a {type(value).__name__}, not what metalab writes; {fix}")


def check_tensor_groups(groups, path, prefix: str = "meta") -> None:
    """`groups` is {group: {name: tensor}}, as the meta-parameters are."""
    if not isinstance(groups, dict):
        raise MetalabError(f"{path}: {prefix} is a {type(groups).__name__}, not a dict of tensors")
    for group, params in groups.items():
        if not isinstance(params, dict) or not all(isinstance(p, torch.Tensor) for p in params.values()):
            raise MetalabError(f"{path}: {prefix}.{group} is not a dict of tensors; pass best.pt or last.pt of a "
                               "`metalab train` run")


def check_shapes(found: dict, expected: dict, path, prefix: str = "meta") -> None:
    """Nested dicts of tensors with the same names and shapes, else a MetalabError naming the first field that
    differs: a wrong-shaped tensor would otherwise be broadcast into the model without a word."""
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or extra:
        raise MetalabError(f"{path}: {prefix} lacks {missing} and has {extra} beyond the model's; it was written for "
                           "another method or network: use the run's own settings")
    for name, want in expected.items():
        if isinstance(want, dict):
            if not isinstance(found[name], dict):
                raise MetalabError(f"{path}: {prefix}.{name} is not a dict of tensors")
            check_shapes(found[name], want, path, f"{prefix}.{name}")
        elif not isinstance(found[name], torch.Tensor) or found[name].shape != want.shape:
            shape = list(found[name].shape) if isinstance(found[name], torch.Tensor) else type(found[name]).__name__
            raise MetalabError(f"{path}: {prefix}.{name} has shape {shape} in the checkpoint but {list(want.shape)} "
                               "in the model; it was written with other settings (--hidden, --ways, ...)")


def nonfinite_fields(state, prefix: str = "") -> list[str]:
    """The dotted names of the floating tensors and floats in `state` that hold NaN or infinity."""
    if isinstance(state, torch.Tensor):
        finite = not state.is_floating_point() or bool(torch.isfinite(state).all())
        return [] if finite else [prefix or "the state"]
    if isinstance(state, float):
        return [] if math.isfinite(state) else [prefix or "the state"]
    if isinstance(state, dict):
        items = state.items()
    elif isinstance(state, (list, tuple)):
        items = enumerate(state)
    else:
        return []
    return [bad for key, value in items for bad in nonfinite_fields(value, f"{prefix}.{key}" if prefix else str(key))]
