"""glibc malloc settings for tensor work on the CPU: freed tensors stay with the process.

PyTorch's CPU allocator asks malloc for every tensor. glibc serves a large request with a
fresh mmap (or trims the heap when a large block is freed), so the next tensor of that size
touches new pages and takes a page fault per 4 KiB. With the mmap threshold at glibc's ceiling
(32 MiB) and the trim threshold out of reach, freed blocks are reused: forwards and training
steps take fewer faults, run faster, and repeated latency measurements agree more closely (the
faults' cost depends on the kernel's memory state). PyTorch's CPU performance guide gets the
same from jemalloc or tcmalloc. The figures are measured in benchmarks/allocator.py and
benchmarks/latency_model.py (benchmarks/README.md, "malloc settings"). The `prunesearch`
command sets this at start; latency tables record it (their figures hold for a process set the
same way). The cost: memory a process freed is not returned to the system until it exits.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # the largest value glibc accepts (its DEFAULT_MMAP_THRESHOLD_MAX)
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: never trim in practice

_state = "default"


def keep_freed_memory() -> str:
    """Raise glibc's mmap and trim thresholds for this process (once; later calls only report).
    Left alone where the user configured malloc (a MALLOC_* variable or GLIBC_TUNABLES) or
    where the C library has no mallopt (not glibc). Returns `allocator_settings()`."""
    global _state
    if _state != "default" or _user_settings():
        return allocator_settings()
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return _state
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD):
        _state = f"glibc mmap threshold {MMAP_THRESHOLD}, trim threshold {TRIM_THRESHOLD}"
    return _state


def is_malloc_setting(name: str) -> bool:
    """Whether the environment variable `name` configures glibc's malloc (then it wins)."""
    return name.startswith("MALLOC_") or name == "GLIBC_TUNABLES"


def _user_settings() -> str | None:
    user = sorted(k for k in os.environ if is_malloc_setting(k))
    return "as configured by " + ", ".join(f"{k}={os.environ[k]}" for k in user) if user else None


def allocator_settings() -> str:
    """How this process's malloc is set: the thresholds `keep_freed_memory` set, the user's
    own MALLOC_* / GLIBC_TUNABLES settings, or 'default'."""
    return _state if _state != "default" else _user_settings() or _state
