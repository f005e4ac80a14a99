"""Running the project's CLIs as a user would (``python -m ...``) for the end-to-end tests."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run ``python -m ...`` and fail with its output when it exits non-zero."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{args} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def training_images() -> list[str]:
    """../shared/data/train when present (a few steps read only a few crops), else the embedded default."""
    shared = ROOT.parent / "shared" / "data" / "train"
    return [str(shared)] if shared.is_dir() else []
