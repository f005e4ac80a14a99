"""Optimizer-aware norms against Adam itself and against a hand computation from its state."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gradbalance_cases import make_mlp_case
from gradbalance import GradientProbe


def train(case, optimizer, probe, steps: int) -> None:
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        probe.backward(case.losses(), case.weights)
        optimizer.step()


@pytest.mark.parametrize("kind", ["adam", "adamw", "adam_amsgrad"])
def test_precond_norm_equals_adam_step_with_beta1_zero(kind):
    """With β1 = 0 Adam's step is exactly -lr * G / (sqrt(v̂)+ε): one loss's norm = ||Δθ|| / lr."""
    case = make_mlp_case()
    case.losses = (lambda full: lambda: {"fit": full()["fit"]})(case.losses)
    case.weights = {"fit": 0.7}
    params = [p for p in case.model.parameters()]
    options = dict(lr=1e-3, betas=(0.0, 0.99), eps=1e-6)
    optimizer = {"adam": lambda: torch.optim.Adam(params, **options),
                 "adamw": lambda: torch.optim.AdamW(params, weight_decay=0.0, **options),
                 "adam_amsgrad": lambda: torch.optim.Adam(params, amsgrad=True, weight_decay=0.0, **options),
                 }[kind]()
    probe = GradientProbe(case.model, case.groups, optimizer=optimizer)
    train(case, optimizer, probe, 3)
    before = [p.detach().clone() for p in case.model.trunk.parameters()]
    optimizer.zero_grad(set_to_none=True)
    stats = probe.backward(case.losses(), case.weights)
    optimizer.step()
    step = math.sqrt(sum(float((p.detach() - b).square().sum()) for p, b in zip(case.model.trunk.parameters(), before)))
    assert stats.precond_norm[0, 0] == pytest.approx(step / options["lr"], rel=1e-9)


def test_precond_norm_hand_computed_from_state_with_coupled_decay():
    case = make_mlp_case()
    params = list(case.model.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-2, betas=(0.9, 0.95), eps=1e-5, weight_decay=0.1)
    probe = GradientProbe(case.model, case.groups, optimizer=optimizer)
    train(case, optimizer, probe, 2)
    # hand computation: per-loss grads, the full gradient G (+ coupled decay), then the Adam denominator
    head = list(case.model.head.parameters())
    losses = case.losses()
    per_loss = {k: torch.autograd.grad(v, head, retain_graph=True) for k, v in losses.items() if k != "aux"}
    expected = {}
    for name, grads in per_loss.items():
        total = 0.0
        for k, p in enumerate(head):
            state = optimizer.state[p]
            g_full = sum(case.weights[n] * per_loss[n][k] for n in per_loss) + 0.1 * p.detach()
            v = 0.95 * state["exp_avg_sq"] + 0.05 * g_full ** 2
            denom = (v / (1 - 0.95 ** (float(state["step"]) + 1))).sqrt() + 1e-5
            total += float((case.weights[name] * grads[k] / denom).square().sum())
        expected[name] = math.sqrt(total)
    optimizer.zero_grad(set_to_none=True)
    stats = probe.backward(case.losses(), case.weights)
    column = stats.groups.index("head")
    for name, value in expected.items():
        assert stats.precond_norm[stats.losses.index(name), column] == pytest.approx(value, rel=1e-10)
    assert np.isnan(stats.precond_norm[stats.losses.index("aux"), column])  # absent stays absent
    table = probe.precond_table()
    assert table.column == "precond_norm" and "precond_norm" in probe.records.columns


def test_precond_norm_is_unscaled_under_grad_scaler():
    """The same Adam state and batch give the same norms with and without loss scaling."""
    norms = []
    for scaler in (None, torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)):
        case = make_mlp_case()
        optimizer = torch.optim.AdamW(case.model.parameters(), lr=1e-2)
        train(case, optimizer, GradientProbe(case.model, case.groups), 2)  # identical state in both runs
        probe = GradientProbe(case.model, case.groups, optimizer=optimizer, scaler=scaler)
        optimizer.zero_grad(set_to_none=True)
        norms.append(probe.backward(case.losses(), case.weights).precond_norm)
    np.testing.assert_allclose(norms[1], norms[0], rtol=1e-9)
