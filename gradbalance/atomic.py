"""Atomic text writes: a unique temporary file in the destination's folder, synced, then renamed.

A crash mid-write leaves the previous file intact; readers never see half a file.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union


def write_text_atomic(path: Union[str, Path], text: str) -> Path:
    """Write ``text`` to ``path`` atomically (``os.replace`` of a synced ``mkstemp`` file)."""
    path = Path(path)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
