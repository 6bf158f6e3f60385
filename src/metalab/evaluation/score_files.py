"""Per-episode score files (.npy, [rows, episodes] float64): written atomically, read back with every check
`metalab compare` and `metalab table` need, so that a bad file is one line naming it, never a traceback."""

import zipfile
from pathlib import Path

import numpy as np

from metalab.atomic import atomic_path, writable_folder
from metalab.errors import MetalabError

FIX = "write it again with `metalab eval --save-scores` or `metalab finetune --save-scores`"


def score_path(path) -> Path:
    """np.save's own naming: a path without the .npy suffix gets it."""
    path = Path(path)
    return path if path.suffix == ".npy" else path.with_name(path.name + ".npy")


def check_writable(path, flag: str) -> None:
    """Before the work: the folder of an output file (made if missing) can be written."""
    writable_folder(Path(path).parent, f"the folder of {flag}")


def save_score_file(path, scores: np.ndarray) -> Path:
    path = score_path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, scores)
    return path


def load_score_row(path, row: int, flag: str = "--step") -> np.ndarray:
    """Row `row` (negative: from the end) of a score file as float64 [episodes]; a 1-D file is one row."""
    path = Path(path)
    if not path.is_file():
        raise MetalabError(f"{path} does not exist; {FIX}")
    try:
        scores = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise MetalabError(f"{path} is not a readable score file ({str(error)[:200]}); {FIX}") from error
    if not isinstance(scores, np.ndarray) or scores.dtype.kind not in "fiub" or scores.ndim not in (1, 2):
        what = scores.dtype if isinstance(scores, np.ndarray) else type(scores).__name__
        shape = list(getattr(scores, "shape", []))
        raise MetalabError(f"{path} holds {what} of shape {shape}, not per-episode scores [rows, episodes]; {FIX}")
    scores = np.atleast_2d(scores).astype(np.float64)
    if scores.shape[1] == 0:
        raise MetalabError(f"{path} holds no episodes; {FIX}")
    if not -len(scores) <= row < len(scores):
        raise MetalabError(f"{flag} {row} is outside {path}, which has {len(scores)} rows (0..{len(scores) - 1}, "
                           "or -1 for the last)")
    values = scores[row]
    if not np.all(np.isfinite(values)):
        raise MetalabError(f"{path} row {row} holds {int(np.sum(~np.isfinite(values)))} non-finite scores (diverged "
                           "episodes): their mean is not defined; compare another row or method")
    return values
