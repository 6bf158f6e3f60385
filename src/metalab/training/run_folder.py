"""A run folder has one writer at a time, and a new run never replaces an old one unasked.

The lock is a file lock (flock) on RUN_FOLDER/.metalab.lock: the kernel releases it when its process ends, even
by SIGKILL, so a crashed run never blocks the next one. Holding it, the temporaries that killed writers left
behind (atomic.py) are removed: nobody else can be writing them.
"""

import shutil
from contextlib import contextmanager
from pathlib import Path

import filelock

from metalab.atomic import remove_stale_temporaries, writable_folder
from metalab.errors import MetalabError

LOCK = ".metalab.lock"
RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl", "curves.png", "tensorboard")  # what `metalab train` writes


@contextmanager
def claimed(folder: Path, flag: str = "--out-dir"):
    """Hold `folder` (made if missing) for this process alone while the block runs; a MetalabError naming
    `flag` when another process holds it or it cannot be written."""
    folder = writable_folder(Path(folder), flag)
    lock = filelock.FileLock(str(folder / LOCK), timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout as error:
        raise MetalabError(f"another metalab process is writing into {folder} (it holds {folder / LOCK}); wait "
                           f"for it to finish or choose another {flag}") from error
    except OSError as error:
        raise MetalabError(f"cannot write into {flag} {folder} ({error.strerror or error}); choose a folder "
                           "you can write to") from error
    try:
        remove_stale_temporaries(folder)
        yield folder
    finally:
        lock.release()


def start_or_refuse(folder: Path, resume: bool, overwrite: bool) -> None:
    """Without --resume a folder that holds a run is refused, unless --overwrite: then its run is removed."""
    if resume:
        return
    found = [name for name in RUN_FILES if (folder / name).exists()]
    if found and not overwrite:
        raise MetalabError(f"{folder} already holds a run ({', '.join(found)}); continue it with --resume, replace "
                           "it with --overwrite, or choose another --out-dir")
    for name in found:
        path = folder / name
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
