"""The process's torch settings: CPU threads, the allocator's habits, and the device to run on."""

import ctypes

import torch

from metalab.config import check_device
from metalab.errors import MetalabError


def configure_torch(threads: int, device: str) -> torch.device:
    """Set torch's CPU threads (0: torch's default, one per core) and return the device, checked to exist."""
    check_device(device)
    keep_freed_memory()
    if threads:
        torch.set_num_threads(threads)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MetalabError(f"--device {device} asked for, but this machine has no CUDA device; use --device cpu")
    return torch.device(device)


def keep_freed_memory() -> None:
    """Ask glibc to keep freed blocks instead of returning them to the kernel at once.

    A meta-step allocates and frees the same few-MB activations over and over; by default glibc maps and
    unmaps each, and the page faults of touching fresh pages slow evaluation markedly (docs/performance.md).
    A no-op where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 1 << 30)
    libc.mallopt(m_trim_threshold, 1 << 30)
