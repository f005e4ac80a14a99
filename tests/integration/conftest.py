"""Shared tiny runs for the end-to-end tests: one stlic probe run and one stlic training run."""
from __future__ import annotations

from pathlib import Path

import pytest

from .cli_runs import run_cli, training_images


@pytest.fixture(scope="session")
def probe_run(tmp_path_factory) -> Path:
    """``gradbalance probe --model stlic`` for 4 steps (probed every 2) on the CPU preset."""
    out = tmp_path_factory.mktemp("probe") / "run"
    data = training_images()
    result = run_cli("gradbalance", "probe", "--model", "stlic", "--steps", "4", "--every", "2", "--device", "cpu",
                     "--out", str(out), *(["--data", *data] if data else []))
    (out.parent / "stdout.txt").write_text(result.stdout)  # what the user saw (test_probe_output_in_context)
    return out


@pytest.fixture(scope="session")
def train_run(tmp_path_factory) -> Path:
    """``stlic train`` with the tiny config for 3 steps (log every step)."""
    out = tmp_path_factory.mktemp("train") / "run"
    data = training_images()
    run_cli("stlic", "train", "--config", "stlic_tiny", "--steps", "3", "--out", str(out),
            *(["--data", *data] if data else []))
    return out
