"""GradientProbe against brute force: norms, .grad, absent vs zero, sampling, AMP scaling, cosines."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gradbalance_cases import brute_force_norms
from gradbalance import GradientProbe


def plain_backward(case, weights) -> None:
    losses = case.losses()
    sum(weights[k] * v for k, v in losses.items()).backward()


def test_norms_match_brute_force(case):
    reference = brute_force_norms(case)
    probe = GradientProbe(case.model, case.groups)
    stats = probe.backward(case.losses(), case.weights)
    np.testing.assert_allclose(stats.raw_norm, reference, rtol=1e-10, atol=1e-14)  # NaN == NaN
    weights = np.array([case.weights[name] for name in stats.losses])
    np.testing.assert_allclose(stats.norm, np.abs(weights)[:, None] * reference, rtol=1e-10, atol=1e-14)


def snapshot_grads(model: nn.Module) -> dict:
    """Copies of every .grad (None kept), then clears them."""
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = None
    return grads


def assert_same_grads(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for name in got:
        assert (got[name] is None) == (expected[name] is None), name
        if got[name] is not None:
            torch.testing.assert_close(got[name], expected[name], rtol=1e-12, atol=1e-14, msg=name)


def test_grad_equals_plain_backward(case):
    GradientProbe(case.model, case.groups).backward(case.losses(), case.weights)
    probed = snapshot_grads(case.model)
    plain_backward(case, case.weights)
    assert_same_grads(probed, snapshot_grads(case.model))


def test_grad_accumulates_existing_and_skips_frozen(mlp_case):
    model = mlp_case.model
    model.trunk[0].bias.requires_grad_(False)
    torch.manual_seed(5)
    existing = {n: torch.randn_like(p) for n, p in model.named_parameters() if p.requires_grad}

    def prefill() -> None:
        for n, p in model.named_parameters():
            p.grad = existing[n].clone() if n in existing else None

    prefill()
    GradientProbe(model, mlp_case.groups).backward(mlp_case.losses(), mlp_case.weights)
    probed = snapshot_grads(model)
    prefill()
    plain_backward(mlp_case, mlp_case.weights)
    assert_same_grads(probed, snapshot_grads(model))
    assert probed["trunk.0.bias"] is None


def test_absent_is_nan_and_zero_is_zero():
    torch.manual_seed(0)
    model = nn.ModuleDict({"a": nn.Linear(3, 3), "b": nn.Linear(3, 1)}).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    h = model["a"](x)
    out = model["b"](h)
    losses = {
        "only_a": h.square().mean(),          # does not reach b -> absent
        "zero_on_b": (out * 0).sum(),          # reaches b (and a) with an exactly zero gradient
        "constant": torch.tensor(3.0, dtype=torch.float64),  # reaches nothing
    }
    stats = GradientProbe(model, {"a": model["a"], "b": model["b"]}).backward(losses)
    table = dict(zip(stats.losses, stats.raw_norm.tolist()))
    assert np.isnan(table["only_a"][1]) and table["only_a"][0] > 0
    assert table["zero_on_b"] == [0.0, 0.0]
    assert np.isnan(table["constant"]).all()
    assert stats.reached.tolist() == [[True, False], [True, True], [False, False]]
    records = GradientProbe(model, {"a": model["a"], "b": model["b"]}).records
    assert records.empty


def test_measure_leaves_grad_untouched_and_retains_graph(mlp_case):
    model = mlp_case.model
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    probe = GradientProbe(model, mlp_case.groups)
    losses = mlp_case.losses()
    stats = probe.measure(losses, mlp_case.weights)
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in model.parameters())
    assert probe.calls == 0
    np.testing.assert_allclose(stats.raw_norm, brute_force_norms(mlp_case), rtol=1e-10)
    sum(losses.values()).backward()  # the graph is still there


def test_measure_records_and_tables(mlp_case):
    probe = GradientProbe(mlp_case.model, mlp_case.groups)
    first = probe.measure(mlp_case.losses(), mlp_case.weights)
    second = probe.measure(mlp_case.losses(), mlp_case.weights)
    assert probe.history == [first, second] and (first.step, second.step) == (0, 1)
    assert sorted(probe.records["step"].unique()) == [0, 1]
    table = probe.table()
    expected = 100 * first.norm[0, 0] / np.nansum(first.norm[:, 0])
    assert table.mean.loc["fit", "trunk"] == pytest.approx(expected, rel=1e-12)


def test_every_samples_steps_and_unprobed_steps_do_plain_backward(mlp_case):
    probe = GradientProbe(mlp_case.model, mlp_case.groups, every=3)
    for step in range(7):
        assert probe.probes_next_call == (step % 3 == 0)
        result = probe.backward(mlp_case.losses(), mlp_case.weights)
        assert (result is not None) == (step % 3 == 0)
        probed = snapshot_grads(mlp_case.model)
        plain_backward(mlp_case, mlp_case.weights)
        assert_same_grads(probed, snapshot_grads(mlp_case.model))
    assert sorted(probe.records["step"].unique()) == [0, 3, 6]


def test_grad_scaler_losses_scaled_norms_unscaled(mlp_case):
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    reference = GradientProbe(mlp_case.model, mlp_case.groups).measure(mlp_case.losses(), mlp_case.weights)
    probe = GradientProbe(mlp_case.model, mlp_case.groups, scaler=scaler)
    stats = probe.backward(mlp_case.losses(), mlp_case.weights)
    np.testing.assert_allclose(stats.raw_norm, reference.raw_norm, rtol=1e-10)
    scaled = snapshot_grads(mlp_case.model)
    plain_backward(mlp_case, {k: w * 2.0 ** 10 for k, w in mlp_case.weights.items()})
    assert_same_grads(scaled, snapshot_grads(mlp_case.model))


def test_cosines_match_brute_force(mlp_case):
    probe = GradientProbe(mlp_case.model, mlp_case.groups, cosine=True)
    stats = probe.backward(mlp_case.losses(), mlp_case.weights)
    trunk = list(mlp_case.model.trunk.parameters())

    def flat(name):
        grads = torch.autograd.grad(mlp_case.losses()[name] * mlp_case.weights[name], trunk)
        return torch.cat([g.reshape(-1) for g in grads])

    a, b = flat("fit"), flat("aux")
    expected = float(a @ b / (a.norm() * b.norm()))
    row = probe.cosine_records.query("group == 'trunk' and loss_a == 'fit' and loss_b == 'aux'")
    assert row["cosine"].item() == pytest.approx(expected, rel=1e-10)
    assert probe.cosine_records.query("group == 'head' and loss_b == 'aux'")["cosine"].isna().all()





def test_records_columns_and_bad_input(mlp_case):
    probe = GradientProbe(mlp_case.model, mlp_case.groups, loss_order=["aux", "fit"])
    probe.backward(mlp_case.losses(), mlp_case.weights)
    records = probe.records
    assert list(records.columns) == ["step", "loss", "group", "weight", "value", "norm", "raw_norm", "reached"]
    assert list(dict.fromkeys(records["loss"])) == ["aux", "fit", "sparse"]
    with pytest.raises(ValueError, match="scalar"):
        probe.backward({"bad": torch.ones(2, requires_grad=True)})
    with pytest.raises(ValueError, match="unknown losses"):
        probe.backward(mlp_case.losses(), {"typo": 1.0})
    with pytest.raises(ValueError, match="every"):
        GradientProbe(mlp_case.model, mlp_case.groups, every=0)
    with pytest.raises(TypeError, match="Adam"):
        GradientProbe(mlp_case.model, mlp_case.groups, optimizer=torch.optim.SGD(mlp_case.model.parameters(), 0.1))
