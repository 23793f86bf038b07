"""Process-level tuning for the demo and benchmark entry points (never called by the library).

:func:`tune_allocator` keeps freed memory inside the process (glibc's ``mallopt``): the training
loops allocate arrays of 0.1-1 MB every step, and without it every step page-faults fresh zeroed
memory. The demo entry point (:func:`minitheory.demos._common.demo_main`, once the options are
accepted) and ``python -m minitheory.bench`` call it; results do not change.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys


def tune_allocator() -> bool:
    """Keep freed memory in the process instead of returning it to the OS (glibc only).

    The training loops allocate a few arrays of 0.1-1 MB per step. glibc serves those with
    ``mmap`` or trims them off the heap top after each free, so every step page-faults fresh
    zeroed memory: on the rank-growth demo that was 3.5 s of system time out of 8.6 s. Raising
    the mmap and trim thresholds (``mallopt``) makes the allocator reuse the same pages. This
    changes no result, only where memory comes from. Returns whether it applied (False off
    glibc).
    """
    name = ctypes.util.find_library("c")
    if not sys.platform.startswith("linux") or not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        return bool(libc.mallopt(M_MMAP_THRESHOLD, 256 << 20)
                    and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):
        return False
