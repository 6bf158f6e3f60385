"""Atomic file writes: a reader sees the old file or the complete new one, never a partial one."""

import errno
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

from metalab.errors import MetalabError

# A full disk, a quota, or a file-size limit (RLIMIT_FSIZE): the write stopped part-way for lack of room.
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
# .NAME.PID.RANDOM.tmp: the writer's pid tells whether it is still alive; .NAME.RANDOM.tmp is older versions'.
_TEMPORARY = re.compile(r"^\..+?\.(?:(?P<pid>\d+)\.)?[^.]+\.tmp$")


@contextmanager
def atomic_path(final: Path):
    """Yield a temporary path beside `final`; on success it is renamed onto `final`, on error removed.
    A full disk (or quota) becomes a MetalabError that says so; any older `final` is left as it was.
    Write through a Python file object (open(tmp, "wb")): then a full disk surfaces as OSError ENOSPC."""
    final = Path(final)
    writable_folder(final.parent, f"the folder of {final.name}")
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp)
    # mkstemp makes the file private (0600); give it the permissions a plain open() would have.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, final)
    except OSError as error:
        if error.errno not in _DISK_FULL:
            raise
        where = ("the file-size limit (ulimit -f) was reached in" if error.errno == errno.EFBIG
                 else "no space left on the device of")
        raise MetalabError(f"{where} {final.parent} while writing {final.name} "
                           f"({error.strerror}); free some space there or write elsewhere (--out-dir for runs, "
                           f"METALAB_CACHE for the data cache). Nothing was overwritten.") from error
    finally:
        tmp.unlink(missing_ok=True)


def writable_folder(folder: Path, what: str) -> Path:
    """Make `folder` (and its parents) if missing and check that files can be written there, before any work
    whose result would go there. `what` names it for the user, e.g. "--out-dir"."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise MetalabError(f"cannot make {what} {folder}: {error.strerror or error} (is it, or a folder above "
                           "it, a file?); choose a folder you can write to") from error
    if not os.access(folder, os.W_OK | os.X_OK):
        raise MetalabError(f"cannot write into {what} {folder}: permission denied; choose a folder you can "
                           "write to")
    return folder


def remove_stale_temporaries(folder: Path, prefix: str = "") -> list[Path]:
    """Remove the temporary files (of atomic_path) in `folder` whose writer is dead: a killed write leaves one.
    Call it holding the lock that excludes other writers of the folder: an old-style name (no pid) is removed
    too. `prefix` restricts it to the temporaries of files whose names start so."""
    removed = []
    for path in Path(folder).glob(f".{prefix}*.tmp"):
        match = _TEMPORARY.match(path.name)
        if match and not (match["pid"] and _alive(int(match["pid"]))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by someone else
        return True
    return True
