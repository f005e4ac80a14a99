"""Output files of the CLIs: never an input, never an existing file unless forced, written atomically.

Every command that writes a file goes through :func:`check_output` before any work and
:func:`atomic_write` at the end:

* an output that is one of the inputs (same file, also through symbolic or hard links) is refused;
* an existing output is refused unless ``force`` (``--force`` / ``-f``), as ``gzip``, ``cp -n``
  and CompressAI's users expect from a codec;
* the bytes go to a unique temporary file in the output's folder (``tempfile.mkstemp``: a
  leftover ``OUT.tmp`` file, directory or symlink is never written through), are synced, then
  moved over the output with ``os.replace`` (which replaces a symlink, never its target). The
  file gets the permissions a plain ``open(path, "w")`` would give (``0o666`` less the umask;
  mkstemp's own are ``0o600``). The writer is :func:`gradbalance.io.atomic.atomic_write`, shared
  by both packages.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from gradbalance.io.atomic import atomic_write, atomic_write_text

__all__ = ["same_file", "check_input_file", "check_output", "check_writable_folder", "atomic_write",
           "atomic_write_bytes", "atomic_write_text", "temporary_files", "read_input_bytes"]


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when both paths exist and are one file (symbolic or hard links included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_input_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a Path when it is a readable regular file; else a ValueError / FileNotFoundError naming it."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a directory, not a file")
    if not path.exists():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    if not os.access(path, os.R_OK):
        raise PermissionError(f"{what} {str(path)!r} is not readable (permission denied)")
    return path


def read_input_bytes(path: str | os.PathLike, what: str) -> bytes:
    """The bytes of input file ``path``; every failure names ``what`` and the path."""
    path = check_input_file(path, what)
    try:
        return path.read_bytes()
    except OSError as error:
        raise OSError(f"cannot read {what} {str(path)!r}: {error.strerror or error}") from None


def check_output(path: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), force: bool = False,
                 what: str = "output") -> Path:
    """Refuse an output file that is an input, a directory, an existing file (unless ``force``)
    or lies in a folder that cannot be written; returns it as a Path."""
    path = Path(path)
    for source in inputs:
        if same_file(path, source):
            raise ValueError(f"{what} {str(path)!r} is the input file {str(source)!r}; refusing to overwrite it")
    if path.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a directory; give a file name")
    if (path.exists() or path.is_symlink()) and not force:
        raise FileExistsError(f"{what} {str(path)!r} already exists; use --force to overwrite it")
    check_writable_folder(path.parent, what)
    return path


def check_writable_folder(folder: str | os.PathLike, what: str = "output") -> Path:
    """The nearest existing ancestor of ``folder`` must be a folder we may write into."""
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{what} folder {str(folder)!r}: {str(existing)!r} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{what} folder {str(existing)!r} is not writable")
    return folder


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """:func:`atomic_write` of ``data``."""
    return atomic_write(path, lambda handle: handle.write(data))


def temporary_files(folder: str | os.PathLike, name: str) -> list[Path]:
    """Temporary files :func:`atomic_write` left beside ``folder/name`` (a killed writer's)."""
    folder = Path(folder)
    return sorted(p for p in folder.glob(f".{name}.*.tmp") if p.is_file() and not p.is_symlink())
