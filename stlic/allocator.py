"""Keep freed memory in the process for reuse (glibc ``mallopt``): no page faults per tensor.

PyTorch's CPU tensors come from ``malloc``. glibc serves every block above its mmap threshold
(32 MiB at most under its dynamic rule) by a fresh ``mmap``, whose pages the kernel zeroes and
faults in on first touch, and unmaps it again on ``free``. The full model's activations at
768x512 are up to 150 MB each, so every layer pays that anew; at 2 CPU threads it was half of
the transforms' time (``g_a`` 4.55 s -> 2.13 s, ``g_s`` 3.9 s -> 2.2 s, UNet refiner 3.27 s ->
2.15 s, full preset on kodim01, before the transforms' own inference changes).

``retain_freed_memory`` raises the mmap threshold to 1 GiB and the trim threshold to 2 GiB, so
large blocks come from the heap and freed ones are reused. This is what jemalloc or tcmalloc,
which Intel's and PyTorch's CPU tuning guides preload, achieve; it needs no preload. Cost: the
process keeps its peak heap until it exits (2 MP image, full model: encode peak 3.4 -> 4.2 GB for
30.3 -> 20.6 s; ``benchmarks/codec.py`` with and without ``--system-malloc``), and a long-lived process whose small allocations
interleave with large ones can fragment it; so ``stlic compress``, ``decompress`` and ``eval``
(short-lived, the same pattern every image) call it at start, ``stlic train`` does not. Library
users call it themselves (it is process-wide); ``STLIC_RETAIN_FREED_MEMORY=0`` turns it off.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["retain_freed_memory", "MMAP_THRESHOLD", "TRIM_THRESHOLD", "ENV_SWITCH"]

#: glibc's mallopt parameter numbers (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: blocks below this come from the heap (glibc caps its own dynamic threshold at 32 MiB)
MMAP_THRESHOLD = 1 << 30
#: free heap above this is returned to the kernel
TRIM_THRESHOLD = (1 << 31) - 1
#: set to 0 to keep glibc's defaults
ENV_SWITCH = "STLIC_RETAIN_FREED_MEMORY"


def retain_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (process-wide); True when they were set.

    False, and nothing changed, on a C library without ``mallopt`` (macOS, Windows, musl)
    or when ``STLIC_RETAIN_FREED_MEMORY=0``.
    """
    if os.environ.get(ENV_SWITCH, "1").strip() == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
