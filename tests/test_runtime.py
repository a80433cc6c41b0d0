"""The jobs' process settings: glibc keeps freed memory instead of mapping every large block."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# In a fresh interpreter: allocate a 64 MiB tensor and report how many blocks glibc serves by mmap
# (mallinfo2().hblks) while it lives, with and without keep_freed_memory().
PROBE = textwrap.dedent("""
    import ctypes, sys, torch
    from landscape_utils.study.runtime import keep_freed_memory
    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                  "fsmblks", "uordblks", "fordblks", "keepcost")]
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = Info
    applied = keep_freed_memory() if sys.argv[1] == "on" else None
    before = libc.mallinfo2().hblks
    x = torch.empty(16 * 2**20)  # 64 MiB of float32
    print(applied, libc.mallinfo2().hblks - before)
""")


def _mapped_blocks(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    applied, blocks = out.stdout.split()
    return applied, int(blocks)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
@pytest.mark.parametrize("mode, applied, mapped", [
    ("off", "None", 1),   # glibc's default: the large block is its own mmap
    ("on", "True", 0),    # kept in the heap
])
def test_large_blocks_come_from_the_heap_only_when_asked(mode, applied, mapped):
    assert _mapped_blocks(mode) == (applied, mapped)
