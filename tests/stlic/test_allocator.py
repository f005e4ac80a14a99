"""``retain_freed_memory``: freed activations are reused, not faulted in again (Linux/glibc)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import stlic.cli

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import resource, sys, torch
from stlic.allocator import retain_freed_memory
print(int(retain_freed_memory()) if sys.argv[1] == "1" else -1)
weight = torch.randn(96, 96)

def forward():  # a chain of layer-sized activations (48 MiB), as in one pass of a network
    x = torch.ones(1 << 17, 96)
    for _ in range(4):
        x = torch.relu(x @ weight)
        x = torch.cat([x, x], 1)[:, :96] * 0.5
    return float(x[0, 0])

for _ in range(3):
    forward()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    forward()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")


def page_faults(retain: bool, env: dict | None = None) -> tuple[int, int]:
    """(applied, minor page faults of three warm passes) in a fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD, "1" if retain else "0"], cwd=ROOT, capture_output=True, text=True,
        check=True, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    ).stdout.split()
    return int(out[0]), int(out[1])


@linux
def test_retained_activations_are_reused_without_page_faults():
    _, default_faults = page_faults(retain=False)
    applied, retained_faults = page_faults(retain=True)
    assert applied == 1
    # default: each 48-96 MiB activation is a fresh mmap, faulted in page by page (or huge page)
    assert default_faults >= 3 * 4 * 24
    assert retained_faults * 20 < default_faults


@linux
def test_environment_switch_turns_it_off():
    applied, faults = page_faults(retain=True, env={"STLIC_RETAIN_FREED_MEMORY": "0"})
    assert applied == 0
    assert faults >= 3 * 4 * 24


@pytest.mark.parametrize("command, expected", [("decompress", 1), ("rd", 0)])
def test_cli_retains_for_inference_commands_only(monkeypatch, tmp_path, command, expected):
    calls = []
    monkeypatch.setattr(stlic.cli, "retain_freed_memory", lambda: calls.append(command))
    missing = str(tmp_path / "missing")
    argv = {"decompress": ["decompress", missing, str(tmp_path / "out.png"), "--checkpoint", missing],
            "rd": ["rd", missing, "--out", str(tmp_path / "rd")]}[command]
    assert stlic.cli.main(argv) == 2  # the missing input is a one-line error either way
    assert len(calls) == expected
