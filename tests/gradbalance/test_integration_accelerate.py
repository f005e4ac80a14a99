"""accelerated_backward: .grad and parameters as accelerator.backward(sum w L) under gradient accumulation."""
from __future__ import annotations

import pytest
import torch

accelerate = pytest.importorskip("accelerate")

from gradbalance import GradientProbe  # noqa: E402
from gradbalance.integrations.accelerate import accelerated_backward  # noqa: E402
from gradbalance_cases import make_mlp_case  # noqa: E402


def train(accelerator, probe_every=None, steps=6):
    """Six micro-batches, 3 optimizer steps; returns .grad before each step (and the probe)."""
    case = make_mlp_case()
    case.model.float()
    optimizer = torch.optim.Adam(case.model.parameters(), lr=1e-2)
    model, optimizer = accelerator.prepare(case.model, optimizer)
    probe = GradientProbe(model, case.groups, optimizer=optimizer, every=probe_every) if probe_every else None
    torch.manual_seed(3)
    batches = [torch.randn(5, 6) for _ in range(steps)]
    grads = []
    for x in batches:
        with accelerator.accumulate(model):
            h = model.trunk(x)
            out = model.head(h)
            losses = {"fit": out.square().mean(), "sparse": out.abs().mean(), "aux": h.square().mean()}
            if probe is None:
                accelerator.backward(sum(case.weights[k] * v for k, v in losses.items()))
            else:
                accelerated_backward(accelerator, probe, losses, case.weights)
            if accelerator.sync_gradients:
                grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
            optimizer.step()
            optimizer.zero_grad()
    return grads, probe


def test_accumulated_probe_grad_is_accelerator_backwards():
    accelerator = accelerate.Accelerator(gradient_accumulation_steps=2, cpu=True)
    expected, _ = train(accelerator)
    got, probe = train(accelerator, probe_every=2)
    assert len(got) == len(expected) == 3
    for step_got, step_expected in zip(got, expected):
        for g, e in zip(step_got, step_expected):
            torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-8)
    # every=2 counts real optimizer steps (the AcceleratedOptimizer skips the others): steps 0 and 2 are
    # probed, each with both of its micro-batches
    assert sorted(probe.records["step"].unique()) == [0, 1, 4, 5]
    assert probe.optimizer_steps == 3
    first = probe.records[probe.records["step"] == 0]
    assert first["precond_norm"].isna().all() and probe.records[probe.records["step"] == 1]["precond_norm"].notna().any()
