"""malloc settings (prunesearch/allocator.py): a freed tensor's memory stays with the process,
and the user's own settings win. Each case runs in a fresh interpreter: malloc's settings last
for a process. What this saves in page faults and time is measured in benchmarks/allocator.py
(a count that moves with the kernel's memory state, so no bound on it here)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from prunesearch.allocator import is_malloc_setting

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")

# glibc's mallinfo2 (2.33+): 'hblkhd' counts bytes in mmapped blocks, 'fordblks' free bytes
# kept in the heap. A 16 MiB tensor is over glibc's default mmap threshold (128 KiB at start).
TENSOR = """
import ctypes, json, sys, torch
from prunesearch.allocator import allocator_settings, keep_freed_memory
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = Info
if sys.argv[1] == "tuned":
    keep_freed_memory()
before = mallinfo2()
tensor = torch.ones(4 * 2**20)
allocated = mallinfo2()
del tensor
freed = mallinfo2()
print(json.dumps({"settings": allocator_settings(),
                  "mmapped": allocated.hblkhd - before.hblkhd,
                  "kept_free": freed.fordblks - allocated.fordblks}))
"""
MIB16 = 16 * 2**20


def run(mode: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not is_malloc_setting(k)}
    out = subprocess.run([sys.executable, "-c", TENSOR, mode], env={**clean, **env},
                         capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_by_default_a_large_tensor_is_mmapped_and_given_back():
    result = run("default")
    assert result["settings"] == "default"
    assert result["mmapped"] >= MIB16
    assert result["kept_free"] < MIB16


def test_kept_memory_serves_a_large_tensor_from_the_heap_and_keeps_it_when_freed():
    result = run("tuned")
    assert result["settings"].startswith("glibc mmap threshold")
    assert result["mmapped"] < MIB16
    assert result["kept_free"] >= MIB16


def test_users_malloc_settings_win():
    result = run("tuned", MALLOC_ARENA_MAX="2")
    assert result["settings"] == "as configured by MALLOC_ARENA_MAX=2"
    assert result["mmapped"] >= MIB16
