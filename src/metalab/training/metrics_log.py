"""metrics.jsonl: one strict-JSON record per logged step, reconciled with the checkpoint a run resumes from.

The record schema is in docs/design.md (metrics.jsonl). Non-finite numbers are written as null: NaN and
Infinity are not JSON, and strict parsers reject them.
"""

import errno
import json
from pathlib import Path

from metalab.atomic import atomic_path
from metalab.errors import MetalabError
from metalab.json_text import json_text


class MetricsLog:
    """Appends records to `path`, after dropping those past `step` (the step the run starts from: 0 for a
    fresh run, which so starts an empty log). A torn last line (a process killed mid-write) is dropped."""

    def __init__(self, path: Path, step: int):
        self.path = Path(path)
        self.records = [r for r in read_records(self.path) if r["step"] <= step]
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(_line(r) for r in self.records))
        self.file = open(self.path, "a")

    def last(self, key: str) -> float:
        """`key` of the last record kept (0 for a fresh run): clocks continue across a resume."""
        value = self.records[-1].get(key) if self.records else None
        return value if value is not None else 0.0

    def append(self, record: dict) -> None:
        try:
            self._write(_line(record))
        except OSError as error:
            full = error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
            raise MetalabError(f"{'no space left' if full else 'cannot write'} while writing {self.path} "
                               f"({error.strerror or error}); {'free some space' if full else 'fix it'} and "
                               "continue with --resume") from error

    def _write(self, text: str) -> None:
        self.file.write(text)
        self.file.flush()

    def close(self) -> None:
        try:
            self.file.close()
        except OSError:
            pass  # append() has reported the failed write


def read_records(path: Path) -> list[dict]:
    """The records of a metrics.jsonl; a damaged last line is dropped, a damaged earlier one is an error."""
    if not Path(path).exists():
        return []
    lines = Path(path).read_text(errors="replace").splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                raise ValueError("not a record")
        except ValueError as error:
            if number == len(lines):
                break  # torn by a kill mid-write; it is recomputed
            raise MetalabError(f"{path} line {number} is not a metrics record ({error}); delete the line or the "
                               "file, or start again with --overwrite") from error
        records.append(record)
    return records


def _line(record: dict) -> str:
    return json_text(record) + "\n"


def training_cost(checkpoint_path, step: int | None) -> dict | None:
    """What meta-training had cost when it wrote the checkpoint at `checkpoint_path` (its `step`), from the
    metrics.jsonl of its run folder: the CPU and wall-clock seconds of its last record at or before that step,
    and the whole logged run's CPU seconds (best.pt is written before the run ends). CPU seconds are rank 0's
    alone in a run on several processes. None when nothing records it: no step, no log beside the checkpoint, a
    log without CPU times (older runs) or one that cannot be read."""
    path = Path(checkpoint_path).parent / "metrics.jsonl"
    if step is None or not path.is_file():
        return None
    try:
        records = [r for r in read_records(path) if isinstance(r.get("cpu_time"), (int, float))]
    except (MetalabError, OSError):
        return None
    before = [r for r in records if r["step"] <= step]
    if not before:
        return None
    return {"log": str(path), "step": before[-1]["step"], "cpu_seconds": before[-1]["cpu_time"],
            "wall_seconds": before[-1].get("time"), "run_steps": records[-1]["step"],
            "run_cpu_seconds": records[-1]["cpu_time"]}
