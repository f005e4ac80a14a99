"""Learnable loss weights (uncertainty weighting) and the loop's own loss scaling, against a plain backward."""
from __future__ import annotations

import warnings

import pandas as pd
import pytest
import torch

from gradbalance import GradientProbe
from gradbalance_cases import make_mlp_case


def uncertainty_objective(case, log_vars):
    """Kendall et al. (2018): sum_i exp(-s_i) L_i + s_i, as (losses, weights) and as the plain sum."""
    losses = case.losses()
    weights = {"fit": torch.exp(-log_vars[0]), "sparse": torch.exp(-log_vars[1])}
    losses = {"fit": losses["fit"], "sparse": losses["sparse"], "log_var": log_vars.sum()}
    return losses, weights


def plain_grads(case, log_vars, scale=1.0):
    for p in [*case.model.parameters(), log_vars]:
        p.grad = None
    losses, weights = uncertainty_objective(case, log_vars)
    (scale * sum(weights.get(name, 1.0) * loss for name, loss in losses.items())).backward()
    return [p.grad.clone() for p in [*case.model.parameters(), log_vars] if p.grad is not None]


def probe_grads(case, log_vars, probe, calls, scale=1.0):
    stats = []
    for _ in range(calls):
        for p in [*case.model.parameters(), log_vars]:
            p.grad = None
        losses, weights = uncertainty_objective(case, log_vars)
        stats.append(probe.backward(losses, weights, scale=scale))
    return [p.grad.clone() for p in [*case.model.parameters(), log_vars] if p.grad is not None], stats


@pytest.mark.parametrize("calls", [1, 2])  # every=2: the first call is probed, the second is not
def test_learnable_weights_get_the_plain_gradient(calls):
    dtype, rtol = torch.float64, 1e-12
    case = make_mlp_case()
    log_vars = torch.tensor([0.3, -0.7], dtype=dtype, requires_grad=True)
    expected = plain_grads(case, log_vars)
    probe = GradientProbe(case.model, case.groups, every=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # log_vars lie outside the model: measured as group 'other'
        got, stats = probe_grads(case, log_vars, probe, calls)
    assert (stats[-1] is None) == (calls == 2)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=rtol, atol=rtol * float(e.abs().max()))
    # the weights' own gradient: d/ds_i of exp(-s_i) L_i + s_i = 1 - exp(-s_i) L_i, not 1
    losses, weights = uncertainty_objective(case, log_vars)
    hand = torch.stack([1 - weights["fit"] * losses["fit"], 1 - weights["sparse"] * losses["sparse"]]).detach()
    torch.testing.assert_close(got[-1], hand, rtol=rtol, atol=0)
    record = probe.records
    row = record[(record["loss"] == "fit")].iloc[0]
    assert row["weight"] == pytest.approx(float(torch.exp(-log_vars[0].detach())), rel=1e-7)  # the value at the step


@pytest.mark.parametrize("calls", [1, 2])
def test_scale_reaches_grad_but_not_the_norms(calls):
    case = make_mlp_case()
    log_vars = torch.tensor([0.3, -0.7], dtype=torch.float64, requires_grad=True)
    expected = plain_grads(case, log_vars, scale=0.25)  # e.g. 4 accumulated micro-batches
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got, stats = probe_grads(case, log_vars, GradientProbe(case.model, case.groups, every=2), calls, scale=0.25)
        _, unscaled = probe_grads(case, log_vars, GradientProbe(case.model, case.groups, every=2), 1)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-15)
    if calls == 1:
        torch.testing.assert_close(torch.from_numpy(stats[0].raw_norm), torch.from_numpy(unscaled[0].raw_norm),
                                   rtol=1e-12, atol=0, equal_nan=True)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), True])
def test_bad_scale_is_named(bad):
    case = make_mlp_case()
    with pytest.raises(ValueError, match="scale must be"):
        GradientProbe(case.model, case.groups).backward(case.losses(), case.weights, scale=bad)


def test_weight_must_be_a_finite_scalar():
    case = make_mlp_case()
    probe = GradientProbe(case.model, case.groups)
    with pytest.raises(ValueError, match="weight of loss 'fit' must be a scalar"):
        probe.backward(case.losses(), {"fit": torch.ones(2)})
    with pytest.raises(ValueError, match="weight of loss 'fit' is not finite"):
        probe.backward(case.losses(), {"fit": torch.tensor(float("inf"), requires_grad=True)})


def test_state_dict_round_trip_resumes_schedule_and_tables(tmp_path):
    case = make_mlp_case()
    optimizer = torch.optim.Adam(case.model.parameters(), lr=1e-3)
    probe = GradientProbe(case.model, case.groups, optimizer=optimizer, every=2)
    for _ in range(5):
        optimizer.zero_grad()
        probe.backward(case.losses(), case.weights)
        optimizer.step()
    torch.save(probe.state_dict(), tmp_path / "probe.pt")
    other = GradientProbe(case.model, case.groups, optimizer=optimizer, every=2)
    other.load_state_dict(torch.load(tmp_path / "probe.pt", weights_only=True))
    pd.testing.assert_frame_equal(other.records, probe.records)
    assert other.probes_next_call == probe.probes_next_call and other.no_path == probe.no_path
    assert other.precond_table(warmup=0).to_markdown() == probe.precond_table(warmup=0).to_markdown()
