"""Atomic file writes: a reader sees the old file or the complete new one, never a partial one."""

import errno
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from metalab.errors import MetalabError

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def atomic_path(final: Path):
    """Yield a temporary path beside `final`; on success it is renamed onto `final`, on error removed.
    A full disk (or quota) becomes a MetalabError that says so; any older `final` is left as it was.
    Write through a Python file object (open(tmp, "wb")): then a full disk surfaces as OSError ENOSPC."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
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
        raise MetalabError(f"no space left on the device of {final.parent} while writing {final.name} "
                           f"({error.strerror}); free some space there or write elsewhere (--out-dir for runs, "
                           f"METALAB_CACHE for the data cache). Nothing was overwritten.") from error
    finally:
        tmp.unlink(missing_ok=True)
