"""Atomic writes: a full disk is a clear error and never damages the file already there."""

import errno
import os

import pytest
import torch

from metalab import checkpoint
from metalab.atomic import atomic_path
from metalab.errors import MetalabError


def test_a_full_disk_is_a_clear_error_and_keeps_the_old_file(tmp_path):
    final = tmp_path / "last.pt"
    checkpoint.save(final, {"step": 1, "theta": torch.ones(3)})
    with pytest.raises(MetalabError, match="no space left .*last.pt.*--out-dir.*METALAB_CACHE"):
        with atomic_path(final) as tmp, open(tmp, "wb") as f:
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert checkpoint.load(final)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary file left behind


def test_other_errors_pass_through_unchanged(tmp_path):
    with pytest.raises(PermissionError):
        with atomic_path(tmp_path / "x.bin"):
            raise PermissionError(errno.EACCES, "Permission denied")
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_writes_through_a_file_object_so_a_full_disk_is_an_oserror(tmp_path, monkeypatch):
    """torch.save to a path reports a failed write as a RuntimeError about stream positions; through a
    file object the OS error (here /dev/full's ENOSPC) reaches atomic_path."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    real_open = open

    def open_dev_full(path, mode="r", *args, **kwargs):
        target = "/dev/full" if str(path).endswith(".tmp") else path
        return real_open(target, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", open_dev_full)
    with pytest.raises(MetalabError, match="no space left"):
        checkpoint.save(tmp_path / "best.pt", {"theta": torch.zeros(100_000)})
    assert list(tmp_path.iterdir()) == []
