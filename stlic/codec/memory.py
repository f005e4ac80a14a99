"""Memory a coding call needs, checked before the networks run, and one line when it runs out.

Peak memory of coding grows with the pixels of the padded image (64-multiple) and the network's
widths. Measured peak resident growth per pixel (CPU, one thread, freed memory retained as
``stlic compress`` runs; 1 MP: ``OMP_NUM_THREADS=1 python benchmarks/coding_memory.py``, written to
``reports/benchmarks/coding_memory.md``; full at 2 MP: ``reports/benchmarks/codec.md``):

=========  ====  ========  ===========  ============
preset     N1    refiner   encode B/px  decode B/px
=========  ====  ========  ===========  ============
tiny       16    8         400          369
small      48    32        670          1431
full       96    64        1329         1624
full 2 MP  96    64        1670         2640
=========  ====  ========  ===========  ============

A least-squares fit to these gives the estimate (0.81x to 1.36x the measured values; the peak
also depends on the size and on the heap retained from earlier calls, so it is a rough guide)::

    encode bytes ≈ (99 + 14.35 N1) H W,   decode bytes ≈ encode bytes + 11.5 C_refiner H W  (refined)

with N1 = ``transform_channels[0]`` (g_a's first width, at H/2 x W/2: the largest activations) and
C_refiner the UNet refiner's width (its first level runs at full resolution). Available memory is
the least of the kernel's ``MemAvailable``, the cgroup's limit and ``ulimit -v`` / ``-d`` headroom,
plus free heap this process already holds (glibc ``mallinfo2``); on CUDA, the device's free memory
plus the caching allocator's unused reserve. An estimate above it is refused before any work; an
allocation that fails anyway becomes the same one-line error (:class:`NotEnoughMemoryError`).
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import re
import sys
from pathlib import Path
from typing import Iterator, Optional

import torch

from stlic.models.lalic import SIZE_MULTIPLE

#: bytes per padded pixel: encode = BASE + PER_WIDTH * N1; decode adds PER_REFINER_WIDTH * C_refiner
BASE, PER_WIDTH, PER_REFINER_WIDTH = 99.0, 14.35, 11.5
_ALLOCATION_FAILURES = ("can't allocate memory", "out of memory", "cannot allocate memory")


class NotEnoughMemoryError(MemoryError):
    """A coding call that would not fit (or did not fit) in memory; the message names the image size."""


def coding_memory(config, height: int, width: int, *, decode: bool = False, refine: bool = True) -> int:
    """Estimated peak bytes of coding an ``height`` x ``width`` image (see module docstring)."""
    pixels = (-(-height // SIZE_MULTIPLE) * SIZE_MULTIPLE) * (-(-width // SIZE_MULTIPLE) * SIZE_MULTIPLE)
    per_pixel = BASE + PER_WIDTH * config.transform_channels[0]
    if decode and refine:
        per_pixel += PER_REFINER_WIDTH * config.refiner_channels
    return int(per_pixel * pixels)


def _read_int(path: str) -> Optional[int]:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _status_bytes(field: str) -> Optional[int]:
    """``VmSize`` / ``VmData`` of this process in bytes (/proc/self/status)."""
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


def _free_heap() -> int:
    """Free bytes glibc holds in this process's heap (reused before asking the kernel), else 0."""
    if not sys.platform.startswith("linux"):
        return 0

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                     "fordblks", "keepcost")]

    try:
        mallinfo2 = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return 0
    mallinfo2.restype = MallInfo2
    return int(mallinfo2().fordblks)


def available_memory(device: torch.device) -> Optional[int]:
    """Bytes a coding call on ``device`` can still allocate (None when unknown)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type != "cpu":
        return None
    limits = []
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        match = re.search(r"^MemAvailable:\s+(\d+) kB", meminfo.read_text(), re.MULTILINE)
        if match:
            limits.append(int(match.group(1)) * 1024)
    cgroup_max, cgroup_now = _read_int("/sys/fs/cgroup/memory.max"), _read_int("/sys/fs/cgroup/memory.current")
    if cgroup_max is not None and cgroup_now is not None:
        limits.append(cgroup_max - cgroup_now)
    try:
        import resource  # POSIX only
    except ImportError:
        resource = None
    for name, field in (("RLIMIT_AS", "VmSize"), ("RLIMIT_DATA", "VmData")):
        if resource is None or not hasattr(resource, name):
            continue
        soft, _ = resource.getrlimit(getattr(resource, name))
        used = _status_bytes(field)
        if soft != resource.RLIM_INFINITY and used is not None:
            limits.append(soft - used)
    return max(min(limits), 0) + _free_heap() if limits else None


def _size(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"


def memory_message(action: str, height: int, width: int, device: torch.device, needed: int,
                   available: Optional[int], ran_out: bool = False) -> str:
    have = f", {_size(available)} available" if available is not None else ""
    what = (f"ran out of memory to {action} a {width}x{height} image on {device.type} (estimated need about "
            f"{_size(needed)}{have})" if ran_out else
            f"not enough memory to {action} a {width}x{height} image on {device.type}: it needs about "
            f"{_size(needed)}{have}")
    return f"{what}; free memory, use a machine or GPU with more (--device cuda), or code a downscaled or cropped copy"


@contextlib.contextmanager
def memory_guard(action: str, config, height: int, width: int, device: torch.device, *,
                 decode: bool = False, refine: bool = True) -> Iterator[None]:
    """Refuse the call before it runs when its estimate exceeds the available memory, and turn an
    allocation failure inside it into a :class:`NotEnoughMemoryError` naming the image size."""
    needed = coding_memory(config, height, width, decode=decode, refine=refine)
    available = available_memory(device)
    if available is not None and needed > available:
        raise NotEnoughMemoryError(memory_message(action, height, width, device, needed, available))
    try:
        yield
    except (MemoryError, RuntimeError) as error:
        if isinstance(error, NotEnoughMemoryError) or not (
                isinstance(error, (MemoryError, torch.OutOfMemoryError))
                or any(text in str(error).lower() for text in _ALLOCATION_FAILURES)):
            raise
        raise NotEnoughMemoryError(memory_message(action, height, width, device, needed,
                                                  available_memory(device), ran_out=True)) from None
