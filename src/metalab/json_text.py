"""JSON that strict parsers read: a non-finite float (a diverged mean or loss) is written null.

Python's json writes NaN and Infinity, which are not JSON; jq, JavaScript and pandas' strict readers reject them.
Files written for people and other tools go through json_text; a study's own cell cache keeps Python's JSON, since
only metalab reads it back and the reports need the infinity of a diverged cell.
"""

import json
import math
from pathlib import Path

from metalab.atomic import atomic_path


def json_text(value, indent: int | None = None) -> str:
    """`value` (dicts, lists, numbers, strings) as standard JSON, every non-finite float as null."""
    return json.dumps(_finite_or_none(value), indent=indent, allow_nan=False)


def write_json(path, value) -> None:
    """json_text(value, indent=2) written atomically to `path` (the --json files of the command line)."""
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(json_text(value, indent=2))


def _finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(item) for item in value]
    return value
