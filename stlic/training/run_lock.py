"""An exclusive lock on a run folder, so two ``stlic train --out RUN`` never write one run.

``RUN/.lock`` is locked with ``fcntl.flock`` (released by the kernel when the process ends, even
on SIGKILL, so a crash never leaves the folder locked); the file holds the owner's pid for the
error message. Once the lock is held, the temporary files a killed writer left in the folder are
stale and can be removed.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_NAME = ".lock"


class RunFolderLocked(RuntimeError):
    """Another process holds the run folder."""


class RunLock:
    """``with RunLock(run_dir):`` holds ``run_dir/.lock`` (creating the folder) until the block ends."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        self._handle = None

    def acquire(self) -> "RunLock":
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise ValueError(f"run folder {str(self.run_dir)!r} is a file, not a folder")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.run_dir / LOCK_NAME, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "?"
            handle.close()
            raise RunFolderLocked(f"run folder {str(self.run_dir)!r} is in use by another process (pid {owner}); "
                                  "wait for it to finish or choose another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()
