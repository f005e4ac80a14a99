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
    assert stats.precond_norm is None  # filled in by the optimizer step
    optimizer.step()
    column = stats.groups.index("head")
    for name, value in expected.items():
        assert stats.precond_norm[stats.losses.index(name), column] == pytest.approx(value, rel=1e-10)
    assert np.isnan(stats.precond_norm[stats.losses.index("aux"), column])  # absent stays absent
    table = probe.precond_table(warmup=0)
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
        stats = probe.backward(case.losses(), case.weights)
        scaler.step(optimizer) if scaler is not None else optimizer.step()
        norms.append(stats.precond_norm)
    np.testing.assert_allclose(norms[1], norms[0], rtol=1e-9)


def reference_precond(case, optimizer, micro_batches: list, max_norm):
    """Brute force: per-loss gradients of fresh forwards, the accumulated and clipped gradient G Adam
    will use, its denominator from the optimizer state, and ||c A_i / d|| per group (float64)."""
    params = [p for p in case.model.parameters()]
    contributions = {}
    for losses in micro_batches:
        for name, loss in losses().items():
            grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
            for k, g in enumerate(grads):
                if g is not None:
                    contributions.setdefault(name, {})[k] = contributions.get(name, {}).get(k, 0) + case.weights[name] * g
    total = [sum(c[k] for c in contributions.values() if k in c) for k in range(len(params))]
    norm = math.sqrt(sum(float(t.square().sum()) for t in total if torch.is_tensor(t)))
    clip = min(1.0, max_norm / (norm + 1e-6)) if max_norm else 1.0
    group = optimizer.param_groups[0]
    beta2, eps = group["betas"][1], group["eps"]
    out = {}
    for name, by_param in contributions.items():
        for gname, module in case.groups.items():
            ids = {id(p) for p in module.parameters()}
            terms = []
            for k, p in enumerate(params):
                if id(p) not in ids or k not in by_param:
                    continue
                state = optimizer.state[p]
                v = beta2 * state["exp_avg_sq"] + (1 - beta2) * (clip * total[k]) ** 2
                d = (v / (1 - beta2 ** (float(state["step"]) + 1))).sqrt() + eps
                terms.append(float((clip * by_param[k] / d).square().sum()))
            if terms:
                out[name, gname] = math.sqrt(sum(terms))
    return out


@pytest.mark.parametrize("micro", [1, 2])
@pytest.mark.parametrize("max_norm", [None, 0.05])
def test_precond_norm_exact_under_clipping_and_accumulation(micro, max_norm):
    """The optimizer-aware norms use the gradient Adam really steps with (clipped, accumulated)."""
    case = make_mlp_case()
    optimizer = torch.optim.AdamW(case.model.parameters(), lr=1e-2, betas=(0.9, 0.99), eps=1e-8)
    probe = GradientProbe(case.model, case.groups, optimizer=optimizer, every=2)
    generator = torch.Generator().manual_seed(3)
    inputs = [(torch.randn(5, 6, dtype=torch.float64, generator=generator),
               torch.randn(5, 3, dtype=torch.float64, generator=generator)) for _ in range(micro)]

    def batch_losses(x, y):
        def losses():
            h = case.model.trunk(x)
            out = case.model.head(h)
            return {"fit": (out - y).square().mean(), "sparse": out.abs().mean(), "aux": h.square().mean()}
        return losses

    batches = [batch_losses(x, y) for x, y in inputs]
    for step in range(5):  # steps 0, 2, 4 probed (every=2 counts optimizer steps)
        optimizer.zero_grad(set_to_none=True)
        if step == 4:
            expected = reference_precond(case, optimizer, batches, max_norm)
        results = [probe.backward(losses(), case.weights) for losses in batches]
        assert all((r is not None) == (step % 2 == 0) for r in results)
        if max_norm:
            torch.nn.utils.clip_grad_norm_(case.model.parameters(), max_norm)
        optimizer.step()
    stats = results[-1]
    assert sorted(set(probe.records.dropna(subset=["precond_norm"])["step"])) == [micro * s + micro - 1 for s in (0, 2, 4)]
    for (loss, group), value in expected.items():
        assert stats.norm_of(loss, group, precond=True) == pytest.approx(value, rel=1e-12)
    assert math.isnan(stats.norm_of("aux", "head", precond=True))
    if micro == 2:
        assert results[0].precond_norm is None  # the window's norms go to its last micro-batch
    table = probe.precond_table(warmup=0)
    assert len(table.steps) == 3


def test_group_outside_the_optimizer_is_absent_not_nonfinite():
    case = make_mlp_case()
    optimizer = torch.optim.Adam(case.model.trunk.parameters(), lr=1e-3)  # the head is not optimized
    probe = GradientProbe(case.model, case.groups, optimizer=optimizer)
    train(case, optimizer, probe, 2)
    table = probe.precond_table(warmup=0)
    assert table.cell("fit", "head") == "-" and table.state("fit", "head") == "absent"
    assert table.mean["trunk"].sum() == pytest.approx(100.0)
