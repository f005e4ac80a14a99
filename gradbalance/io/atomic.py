"""Atomic file writes: a temporary file beside the target, synced, then renamed over it.

A reader never sees a half-written file, and on any error the old file is untouched (the rule of
the developers' guide: outputs written atomically). Imports nothing of gradbalance, so
``stlic.output_files`` can use it without loading the probe, pandas or matplotlib.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Union


def atomic_write(path: Union[str, Path], write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(handle)`` on a unique temporary file beside ``path`` (``tempfile.mkstemp``; a
    leftover file or symlink is never written through), sync it and move it over ``path``; on any
    error the temporary file is removed and ``path`` is untouched. Permissions: ``0o666`` less the
    umask. (Also the writer of every ``stlic`` output: ``stlic.output_files``.)"""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    except OSError as error:
        raise OSError(f"cannot write {str(out)!r}: cannot create a file in its folder ({error.strerror})") from None
    try:
        mask = os.umask(0o22)
        os.umask(mask)
        os.fchmod(fd, 0o666 & ~mask)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def atomic_write_text(path: Union[str, Path], text: str) -> Path:
    """:func:`atomic_write` of ``text`` in UTF-8."""
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))
