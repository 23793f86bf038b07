"""Where the process's memory comes from: two measures against page faults, results unchanged.

The cores allocate temporaries of 0.1-1 MB per call. glibc's malloc serves blocks above its
mmap threshold (128 KB at start) with fresh ``mmap`` pages and returns freed memory at the top of
its heap to the OS above its trim threshold, so without either measure every call page-faults
fresh zeroed memory, which costs more than the arithmetic (the diagonal head's public
``loss_and_grads``: 630 -> 256 us).

* :func:`warm_heap` (run once when :mod:`minitheory` is imported) only frees one large block:
  glibc then raises both thresholds itself (mmap to about 8 MB, trim to about 16 MB), its
  documented dynamic threshold (mallopt(3)), exactly as after any NumPy program frees its first
  array of a few MB. It makes no ``mallopt`` call.
* :func:`tune_allocator` (the demo entry point :func:`minitheory.demos._common.demo_main`, once
  the options are accepted, and ``python -m minitheory.bench``) sets both thresholds high with
  ``mallopt``, for training arrays of any size.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys


def warm_heap(nbytes: int = 8 << 20) -> None:
    """Allocate and free one ``nbytes`` block (never written, so no page is touched).

    Freeing a block that glibc served with ``mmap`` raises its mmap threshold to that block's
    size and its trim threshold to twice that (up to 32 MB; mallopt(3), "M_MMAP_THRESHOLD"): from
    then on the process keeps up to ``2 nbytes`` of freed heap for reuse. Off glibc, or once any
    threshold was set explicitly, this does nothing.
    """
    import numpy as np
    np.empty(nbytes, dtype=np.uint8)    # freed at once: nothing refers to it


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
