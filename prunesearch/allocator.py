"""glibc malloc settings for tensor work on the CPU: freed tensors stay with the process.

PyTorch's CPU allocator asks malloc for every tensor. glibc serves a large request with a
fresh mmap (or trims the heap when a large block is freed), so the next tensor of that size
touches new pages and takes a page fault per 4 KiB. Measured on the 2-core VM
(benchmarks/latency_model.py, 2026-12-04): mobilenetv2_small's forward at batch 64 took 51.7 ms
and 1.15 M page faults by default, 24.0 ms and 67 k with the mmap threshold at glibc's ceiling
(32 MiB) and the trim threshold out of reach; a resnet20 training step at batch 128 went from
251 to 213 ms; and the latency of the same subnetworks, measured twice, differed by a median
14% instead of 7% (the faults' cost depends on the kernel's memory state). PyTorch's CPU
performance guide gets the same from jemalloc or tcmalloc. benchmarks/allocator.py
measures the faults and time in fresh processes. The `prunesearch` command sets
this at start; latency tables record it (their figures hold for a process set the same way).
The cost: memory a process freed is not returned to the system until it exits.
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
