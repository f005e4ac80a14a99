"""torchrun itself (2 CPU processes, gloo): `stlic train` and `gradbalance probe` match one process
on the combined batch. The train command is the README's multi-node line, placeholders filled in.

The rate's additive-noise estimate draws different noise in 2 ranks than in 1 process, so the rate
coefficient is tiny here and the rate row is not compared: every other loss is noise-free.
"""
from __future__ import annotations

import csv
import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stlic_training_helpers import fast_config
from stlic.training.logging import read_log

REPO = Path(__file__).resolve().parents[3]
TORCHRUN = Path(sys.executable).parent / "torchrun"
NOISE_FREE = ("l2", "l1", "lpips", "wasserstein", "adversarial")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def readme_multinode_command() -> list[str]:
    """The README's multi-node torchrun line up to ``-m stlic train``, for 1 node and 2 processes."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    (line,) = re.findall(r"^torchrun --nnodes N .*$", text, flags=re.M)
    prefix = line[: line.index("-m stlic train") + len("-m stlic train")]
    filled = (prefix.replace("--nnodes N", "--nnodes 1").replace("--node_rank R", "--node_rank 0")
              .replace("HOST", "127.0.0.1").replace("PORT", str(_free_port()))
              .replace("--nproc_per_node 8", "--nproc_per_node 2"))
    assert filled.startswith("torchrun ") and not re.search(r"\b(N|R|HOST|PORT)\b", filled), filled
    return [str(TORCHRUN)] + shlex.split(filled)[1:]


def _run(command: list[str], cwd: Path) -> None:
    path = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=None)
    assert done.returncode == 0, f"{shlex.join(command)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def _config(path: Path, batch_size: int) -> Path:
    config = fast_config(batch_size=batch_size, loss_weights={"rate": [1e-6, 1e-6]}, optim={"lr": 1e-3})
    path.write_text(yaml.safe_dump(config.to_dict()))
    return path


@pytest.mark.slow
@pytest.mark.skipif(not TORCHRUN.is_file(), reason="torchrun is not installed beside this python")
def test_torchrun_train_matches_one_process_on_the_combined_batch(tmp_path, photos):
    ranks, single = tmp_path / "ranks", tmp_path / "single"
    _run(readme_multinode_command() + ["--config", str(_config(tmp_path / "b1.yaml", 1)), "--data", str(photos),
                                       "--out", str(ranks), "--steps", "2", "--device", "cpu"], tmp_path)
    _run([sys.executable, "-m", "stlic", "train", "--config", str(_config(tmp_path / "b2.yaml", 2)),
          "--data", str(photos), "--out", str(single), "--steps", "2", "--device", "cpu"], tmp_path)
    logged, expected = read_log(ranks), read_log(single)
    assert [r["step"] for r in logged] == [r["step"] for r in expected] == [1, 2]  # rank 0 alone logs
    for step, (got, want) in enumerate(zip(logged, expected), start=1):
        assert got["lambda_rate"] == want["lambda_rate"]
        for name in NOISE_FREE:  # step 2 also checks that step 1's update was the combined batch's
            assert got[f"loss/{name}"] == pytest.approx(want[f"loss/{name}"], rel=1e-5 if step == 1 else 1e-3), \
                (step, name)
    assert (ranks / "model.pt").is_file() and (ranks / "checkpoint.pt").is_file()


def _norms(run: Path) -> dict[tuple[str, str, str], float]:
    with open(run / "records.csv", newline="") as handle:
        return {(row["step"], row["loss"], row["group"]): float(row["norm"]) for row in csv.DictReader(handle)
                if row["norm"] not in ("", "nan")}


@pytest.mark.slow
@pytest.mark.skipif(not TORCHRUN.is_file(), reason="torchrun is not installed beside this python")
def test_probe_under_torchrun_matches_one_process_on_the_combined_batch(tmp_path, photos):
    probe = ["-m", "gradbalance", "probe", "--model", "stlic", "--steps", "2", "--every", "1",
             "--data", str(photos), "--device", "cpu", "--patch-size", "64"]
    _run([str(TORCHRUN), "--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
          "--master_port", str(_free_port())] + probe + ["--batch-size", "1", "--out", str(tmp_path / "ranks")],
         tmp_path)
    _run([sys.executable] + probe + ["--batch-size", "2", "--out", str(tmp_path / "single")], tmp_path)
    got, want = _norms(tmp_path / "ranks"), _norms(tmp_path / "single")
    assert got.keys() == want.keys()
    first = [key for key in want if key[0] == "0" and key[1] in NOISE_FREE]
    assert len(first) == 2 + 3 * 2  # l2, l1 reach main only; lpips, wasserstein, adversarial both groups
    for key in first:  # the first probed step: gradients averaged over ranks = the combined batch's
        assert got[key] == pytest.approx(want[key], rel=1e-4), key
