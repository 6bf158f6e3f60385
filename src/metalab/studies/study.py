"""The study seam: a study is a list of cells, each computed once and cached, then one report over all of them.

A study (extrapolation, more steps than trained, ...) trains what it needs with the shared loop, splits its
evaluation into cells (one checkpoint at one setting, say), and turns the cells' results into a report.
`run_study` owns what every study shares: the cell cache (out/cells/<key>.json, each written whole or not at
all, so a killed run resumes where it stopped), one progress bar over all the cells, and the files written
beside the study's own Markdown: report.md, results.json (every cell) and results.csv (every row of every cell).
"""

import csv
import dataclasses
import hashlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from tqdm import tqdm

from metalab.atomic import atomic_path, remove_stale_temporaries, writable_folder
from metalab.config import Config
from metalab.errors import MetalabError
from metalab.json_text import json_text

BUDGETS = ("tiny", "quick", "full")  # tiny: CI, seconds; quick: under 30 minutes on 2 cores; full: the report
EPISODES = {"tiny": 20, "quick": 200, "full": 1000}  # default meta-test episodes of each budget
_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")


@dataclass(frozen=True)
class StudySettings:
    """How cells are evaluated: `episodes` meta-test episodes fixed by `seed` (the same for every method)."""

    episodes: int = 1000
    seed: int = 0
    threads: int = 0  # torch CPU threads; 0 = one per core
    device: str = "cpu"
    budget: str = "full"  # cells may size themselves by it (e.g. fewer settings on "tiny")
    data_dir: str | None = None  # the Omniglot archives' folder (None: $METALAB_DATA or the user cache)

    def __post_init__(self):
        if self.budget not in BUDGETS:
            raise MetalabError(f"unknown study budget {self.budget!r}; choose one of {BUDGETS}")
        if self.episodes <= 0:
            raise MetalabError(f"--episodes must be a positive number, got {self.episodes}")


@dataclass(frozen=True)
class Cell:
    """One unit of a study's work. `compute()` returns a JSON-serializable dict, by convention
    {"rows": [flat dicts, one per table row], "scores": [per-episode floats], ...}."""

    key: str  # unique within the study and file-name safe, e.g. "maml__shear=-0.785"
    compute: Callable[[], dict]
    # The checkpoints the cell reads; None: all of the study's. Its cache stays valid while these stay the same,
    # so adding a checkpoint to a study recomputes only the cells that read it.
    inputs: tuple[Path, ...] | None = None


class Study(Protocol):
    name: str  # "extrapolation-omniglot", "more-steps", ...

    def train(self, budget: str, out: Path, threads: int, data_dir=None) -> list[Path]:
        """Train the models the study needs in out/train/<model>/ (train_run); their best.pt files."""
        ...

    def cells(self, checkpoints: list[Path], settings: StudySettings) -> list[Cell]:
        ...

    def report(self, results: dict[str, dict], out: Path) -> str:
        """Write PNG plots into `out`; the Markdown body of report.md. `results`: cell key -> its dict."""
        ...


def budgeted(config: Config, steps: int, budget: str) -> Config:
    """`config` trained for `steps`, validated and checkpointed four times on at most 100 episodes (10 on tiny)."""
    every = max(1, steps // 4)
    return config.replace(steps=steps, val_every=every, checkpoint_every=every,
                          val_episodes=10 if budget == "tiny" else min(config.val_episodes, 100))


def train_run(config: Config, folder: Path, data_dir=None) -> Path:
    """folder/best.pt of `config` trained by the shared loop: a finished run is reused, a stopped one resumed
    (a run in the folder with other settings is refused by the loop, which says so). Always resuming: a run
    killed before its first checkpoint starts again from step 0 instead of being refused as an old run."""
    from metalab import checkpoint
    from metalab.training.loop import train

    folder = Path(folder)
    last = folder / "last.pt"
    if last.is_file() and (folder / "best.pt").is_file() and checkpoint.load(last).get("step") == config.steps:
        return folder / "best.pt"
    train(config, folder, resume=True, data_dir=data_dir)
    return folder / "best.pt"


def run_study(study: Study, checkpoints: list[Path], out: Path, settings: StudySettings) -> Path:
    """Compute every cell of `study` not already cached in out/cells/, then write report.md, results.json and
    results.csv into `out`; the report's path. results.json is standard JSON: a diverged mean is written null.
    One process at a time writes into `out` (a second is refused, naming the folder)."""
    from metalab.training.run_folder import claimed

    with claimed(Path(out), "--out") as out:
        return _run_study(study, checkpoints, out, settings)


def _run_study(study: Study, checkpoints: list[Path], out: Path, settings: StudySettings) -> Path:
    cells_dir = writable_folder(out / "cells", "--out")
    remove_stale_temporaries(cells_dir)  # of a run killed mid-write: under the folder's lock, no writer is alive
    cells = study.cells([Path(c) for c in checkpoints], settings)
    _check_keys(study.name, cells)
    results = {}
    with tqdm(total=len(cells), desc=study.name, unit="cell", dynamic_ncols=True) as bar:
        for cell in cells:
            path = cells_dir / f"{cell.key}.json"
            fingerprint = _fingerprint(study.name, checkpoints if cell.inputs is None else cell.inputs, settings)
            results[cell.key] = _cached(path, fingerprint)
            if results[cell.key] is None:
                bar.set_postfix_str(cell.key)
                results[cell.key] = cell.compute()
                _write_text(path, json.dumps({"key": cell.key, "fingerprint": fingerprint,
                                              "result": results[cell.key]}))
            bar.update()
    body = study.report(results, out)
    _write_text(out / "report.md", _header(study.name, checkpoints, settings) + body.rstrip() + "\n")
    _write_text(out / "results.json", json_text({"study": study.name, "settings": dataclasses.asdict(settings),
                                                 "checkpoints": [str(c) for c in checkpoints],
                                                 "cells": results}, indent=1))
    _write_text(out / "results.csv", rows_csv(results))
    return out / "report.md"


def rows_csv(results: dict[str, dict]) -> str:
    """Every row of every cell, one CSV line each, with the cell's key in the first column."""
    rows = [{"cell": key, **row} for key, result in results.items() for row in result.get("rows", [])]
    columns = list(dict.fromkeys(name for row in rows for name in row))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns or ["cell"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def _check_keys(name: str, cells: list[Cell]) -> None:
    keys = [cell.key for cell in cells]
    bad = [key for key in keys if not _SAFE_KEY.match(key)]
    if bad or len(set(keys)) != len(keys):
        # A study's own bug, not the user's: a plain error with the keys.
        raise ValueError(f"study {name}: cell keys must be unique and file-name safe; got {bad or keys}")


def _fingerprint(name: str, checkpoints: list[Path], settings: StudySettings) -> str:
    """What a cached cell was computed from: the study, the episodes and the checkpoint files (path, size,
    modification time). Threads and device change no result beyond rounding, so they are left out."""
    files = []
    for path in map(Path, checkpoints):
        stat = path.stat()
        files.append([str(path.resolve()), stat.st_size, stat.st_mtime_ns])
    basis = {"study": name, "episodes": settings.episodes, "seed": settings.seed, "budget": settings.budget,
             "checkpoints": files}
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:16]


def _cached(path: Path, fingerprint: str) -> dict | None:
    """The cached result of a cell, or None when absent, unreadable or computed from other inputs."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("fingerprint") != fingerprint:
        return None
    return saved.get("result")


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:  # a Python file object, so a full disk surfaces as ENOSPC (atomic.py)
            f.write(text)


def _header(name: str, checkpoints: list[Path], settings: StudySettings) -> str:
    listed = "\n".join(f"- `{c}`" for c in checkpoints) or "- (none)"
    return (f"# Study: {name}\n\n{settings.episodes} episodes per cell (seed {settings.seed}), the same for every "
            f"method; budget {settings.budget}. Checkpoints:\n\n{listed}\n\n")
