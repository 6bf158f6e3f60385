"""Checkpoints: one file with everything needed to resume exactly, written atomically."""

from pathlib import Path

import torch

from metalab.atomic import atomic_path
from metalab.errors import MetalabError


def save(path: Path, state: dict) -> None:
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)


def load(path: Path, device="cpu") -> dict:
    path = Path(path)
    if not path.exists():
        raise MetalabError(f"no checkpoint at {path}; train first (`metalab train`) or pass the right path")
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except Exception as error:  # torch raises several types for a damaged file
        raise MetalabError(f"{path} is not a readable metalab checkpoint ({error}); use another checkpoint "
                           "(best.pt or last.pt of the run) or train again") from error
