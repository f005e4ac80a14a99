"""Peak memory of a probed step with an optimizer or cosines: the per-loss gradients and .grad, no
more full-size copies (issue 9.12). Measured as peak resident memory in a fresh process (Linux)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import json, torch
from torch import nn
from gradbalance import GradientProbe

torch.manual_seed(0)
model = nn.Sequential(*[nn.Linear(1024, 1024) for _ in range(8)])  # 32 MiB of parameters, tiny activations
x = torch.randn(2, 1024)
param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())

def losses():
    h = model[:4](x)
    out = model[4:](h)
    return {"a": out.square().mean(), "b": out.abs().mean(), "c": h.square().mean(), "d": out.sum()}

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

def extra_peak(step):
    before = rss("VmRSS:")
    open("/proc/self/clear_refs", "w").write("5")
    step()
    return (rss("VmHWM:") - before) / param_bytes

optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
sum(losses().values()).backward(); optimizer.step(); optimizer.zero_grad(set_to_none=True)  # Adam state
out = {}
for name, kwargs in [("plain", None), ("optimizer", dict(optimizer=optimizer)), ("cosine", dict(cosine=True))]:
    probe = None if kwargs is None else GradientProbe(model, {"first": model[:4], "last": model[4:]}, **kwargs)
    l = losses()
    def step():
        if probe is None:
            sum(l.values()).backward()
        else:
            probe.backward(l)
        optimizer.step()
    out[name] = extra_peak(step)
    optimizer.zero_grad(set_to_none=True)
    if probe is not None and hasattr(probe, "remove_hooks"):
        probe.remove_hooks()
    del probe, l
print(json.dumps(out))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or not os.access("/proc/self/clear_refs", os.W_OK),
                    reason="peak RSS reset needs Linux /proc/self/clear_refs")
def test_probe_keeps_only_what_the_norms_need():
    env = dict(os.environ, PYTHONPATH=str(ROOT), MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-P", "-c", CHILD], capture_output=True, text=True, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    peaks = json.loads(done.stdout.strip().splitlines()[-1])
    # 4 losses: their 4 gradients (reaching 'last' or both) and .grad are needed (<= 5 x params);
    # before: + the total gradient, v and the denominators (optimizer), float64 flat copies (cosine)
    assert peaks["plain"] < 2.5, peaks
    assert peaks["optimizer"] < 5.6, peaks
    assert peaks["cosine"] < 5.6, peaks
