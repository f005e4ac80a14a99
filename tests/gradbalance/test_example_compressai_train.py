"""examples/compressai_train.py runs (a few steps on 64 px crops): probe and Balancer state in the checkpoint, resume."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "compressai_train.py"
SMALL = ["--batch-size", "2", "--patch-size", "64", "--probe-every", "2", "--log-every", "2", "--validate-every", "2"]


def run(*args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SCRIPT.parents[1])}
    done = subprocess.run([sys.executable, str(SCRIPT), *SMALL, *args], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_probed_run_tables_and_resumes(tmp_path):
    out = run("--steps", "4", "--save", str(tmp_path))
    assert "step 4: loss" in out
    table = (tmp_path / "table.md").read_text()
    assert "mean ± std over 2 probed steps (0-2)" in table
    assert "no path from bpp to g_s, mse to hyper, mse to entropy" in table  # hyperprior: named, not 0 %
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["step"] == 4 and state["weights"] == {"bpp": 1.0, "mse": 1e-2 * 255 ** 2}
    assert state["probe"]["calls"] == 4 and sorted(set(state["probe"]["records"]["step"])) == [0, 2]
    run("--steps", "6", "--save", str(tmp_path), "--resume")
    resumed = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert resumed["step"] == 6 and sorted(set(resumed["probe"]["records"]["step"])) == [0, 2, 4]
    assert "over 3 probed steps (0-4)" in (tmp_path / "table.md").read_text()


def test_balanced_run_logs_and_saves_the_balanced_weights(tmp_path):
    out = run("--steps", "4", "--save", str(tmp_path), "--balance", '{"g_a": {"bpp": 30, "mse": 70}}')
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    mse_weight = state["balancer"]["weights"]["mse"]
    assert state["balancer"]["weights"]["bpp"] == 1.0 and mse_weight != 1e-2 * 255 ** 2  # bpp held, λ·255² moved
    assert state["weights"] == state["balancer"]["weights"]
    assert f"mse weight {mse_weight:.1f}" in out.splitlines()[-2]  # the log reads the balanced weight
