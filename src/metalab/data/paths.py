"""Where archives and preprocessed caches live.

Archives (the data set's own zip files) are looked up in `--data-dir`, else `$METALAB_DATA`, else the
user's cache folder. Preprocessed arrays go to `$METALAB_CACHE`, else the user's cache folder; they are
derived data and can always be rebuilt from the archives.
"""

import os
from pathlib import Path

import platformdirs


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The folder that holds (or will hold) the data set archives."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("METALAB_DATA"):
        return Path(os.environ["METALAB_DATA"]).expanduser()
    return Path(platformdirs.user_cache_dir("metalab")) / "data"


def cache_dir() -> Path:
    """The folder for preprocessed arrays (safe to delete)."""
    if os.environ.get("METALAB_CACHE"):
        return Path(os.environ["METALAB_CACHE"]).expanduser()
    return Path(platformdirs.user_cache_dir("metalab")) / "preprocessed"


def program_dir() -> Path:
    """The folder for compiled meta-gradient programs (`--compile aot`): `$METALAB_CACHE/programs`, else the
    user's cache folder's (safe to delete; a program is rebuilt when missing)."""
    root = os.environ.get("METALAB_CACHE")
    return (Path(root).expanduser() if root else Path(platformdirs.user_cache_dir("metalab"))) / "programs"
