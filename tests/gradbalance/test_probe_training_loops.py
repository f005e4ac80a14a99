"""GradientProbe in real training loops: requires_grad changing, leaves outside the model,
reentrant checkpointing, non-finite / zero / absent gradients, one cell by name, device placement."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from gradbalance import GradientProbe
from gradbalance.probe.per_loss import group_norm
from gradbalance_cases import brute_force_norms
from test_probe import assert_same_grads, plain_backward, snapshot_grads


def test_requires_grad_is_read_on_every_call(mlp_case):
    model = mlp_case.model
    model.head.requires_grad_(False)
    probe = GradientProbe(model, mlp_case.groups)
    model.head.requires_grad_(True)  # unfrozen after the probe was built
    stats = probe.backward(mlp_case.losses(), mlp_case.weights)
    probed = snapshot_grads(model)
    plain_backward(mlp_case, mlp_case.weights)
    assert_same_grads(probed, snapshot_grads(model))
    assert probed["head.weight"] is not None
    np.testing.assert_allclose(stats.raw_norm, brute_force_norms(mlp_case), rtol=1e-10)
    model.trunk[0].requires_grad_(False)  # frozen after the probe was built
    probe.backward(mlp_case.losses(), mlp_case.weights)
    probed = snapshot_grads(model)
    plain_backward(mlp_case, mlp_case.weights)
    assert_same_grads(probed, snapshot_grads(model))
    assert probed["trunk.0.weight"] is None


def test_leaves_outside_the_model_get_grad_and_are_measured_as_other():
    torch.manual_seed(0)
    model = nn.Linear(3, 2).double()
    log_sigma = nn.Parameter(torch.tensor([0.3, -0.2], dtype=torch.float64))  # learnable uncertainty weights
    head = nn.Linear(2, 1).double()  # a loss module's parameters
    x = torch.randn(4, 3, dtype=torch.float64)

    def losses():
        h = model(x)
        return {"fit": torch.exp(-log_sigma[0]) * h.square().mean() + log_sigma[0],
                "head": head(h).abs().mean() * torch.exp(-log_sigma[1])}

    weights = {"fit": 1.0, "head": 0.5}
    probe = GradientProbe(model, {"model": model}, every=2)
    with pytest.warns(UserWarning, match="outside the probed model"):
        stats = probe.backward(losses(), weights)
    leaves = [log_sigma, head.weight, head.bias]
    probed = [p.grad.clone() for p in [*model.parameters(), *leaves]]
    for p in [*model.parameters(), *leaves]:
        p.grad = None
    sum(weights[k] * v for k, v in losses().items()).backward()
    for got, p in zip(probed, [*model.parameters(), *leaves]):
        torch.testing.assert_close(got, p.grad, rtol=1e-12, atol=1e-14)
    assert stats.groups == ("model", "other")
    for name in ("fit", "head"):
        grads = torch.autograd.grad(losses()[name], leaves, allow_unused=True)
        expected = math.sqrt(sum(float(g.square().sum()) for g in grads if g is not None))
        assert stats.norm_of(name, "other", weighted=False) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="outside the model reach the losses"):
        GradientProbe(model, {"model": model}, strict=True).backward(losses(), weights)


class CheckpointedNet(nn.Module):
    def __init__(self, reentrant: bool) -> None:
        super().__init__()
        self.stem, self.block, self.head = nn.Linear(4, 6), nn.Sequential(nn.Linear(6, 6), nn.Tanh()), nn.Linear(6, 2)
        self.reentrant = reentrant

    def forward(self, x):
        h = self.stem(x)
        if self.reentrant is not None:
            h = checkpoint(self.block, h, use_reentrant=self.reentrant)
        else:
            h = self.block(h)
        return h, self.head(h)


def test_reentrant_checkpoint_matches_plain_backward_and_brute_force():
    torch.manual_seed(0)
    net = CheckpointedNet(reentrant=True).double()
    reference = CheckpointedNet(reentrant=None).double()
    reference.load_state_dict(net.state_dict())
    x = torch.randn(5, 4, dtype=torch.float64)

    def losses(module):
        h, out = module(x)
        return {"out": out.square().mean(), "hidden": h.abs().mean(), "zero_w": out.sum()}

    weights = {"out": 1.0, "hidden": 0.3, "zero_w": 0.0}
    groups = lambda m: {"stem": m.stem, "block": m.block, "head": m.head}  # noqa: E731
    stats = GradientProbe(net, groups(net)).backward(losses(net), weights)
    expected = GradientProbe(reference, groups(reference)).measure(losses(reference), weights)
    np.testing.assert_allclose(stats.raw_norm, expected.raw_norm, rtol=1e-12)  # NaN (absent) == NaN
    assert stats.reached.tolist() == expected.reached.tolist()
    plain = {n: p.grad.clone() for n, p in net.named_parameters()}
    net.zero_grad(set_to_none=True)
    sum(weights[k] * v for k, v in losses(net).items()).backward()
    for n, p in net.named_parameters():
        torch.testing.assert_close(plain[n], p.grad, rtol=1e-12, atol=1e-15, msg=n)


def test_absent_nonfinite_and_zero_are_kept_apart(tmp_path):
    torch.manual_seed(0)
    model = nn.ModuleDict({"a": nn.Linear(3, 3), "b": nn.Linear(3, 1), "c": nn.Linear(3, 1)}).double()
    x = torch.randn(4, 3, dtype=torch.float64)
    h = model["a"](x)
    losses = {"fit": model["b"](h).square().mean(),
              "broken": model["b"](h).mean() * torch.tensor(float("nan"), dtype=torch.float64),
              "zero": (model["c"](x) * 0).sum()}  # reaches c only, with an exactly zero gradient
    probe = GradientProbe(model, {"a": model["a"], "b": model["b"], "c": model["c"]})
    with pytest.warns(RuntimeWarning, match="non-finite gradient.*'broken' in 'b'"):
        stats = probe.backward(losses)
    assert [stats.state_of("broken", g) for g in "abc"] == ["nonfinite", "nonfinite", "absent"]
    assert [stats.state_of("zero", g) for g in "abc"] == ["absent", "absent", "zero"]
    assert stats.state_of("fit", "b") == "measured"
    records = probe.records.set_index(["loss", "group"])
    assert bool(records.loc[("broken", "b"), "reached"]) and not bool(records.loc[("zero", "a"), "reached"])
    table = probe.table()
    assert np.isnan(table.mean.loc["fit", "b"])  # not renormalised to 100 % without 'broken'
    assert table.cell("fit", "b") == "non-finite" and table.cell("zero", "c") == "zero"
    assert table.cell("zero", "a") == "-" and table.cell("fit", "c") == "-"
    from gradbalance.report.plots import plot_heatmap, shares_over_steps

    over_steps = shares_over_steps(probe.records).set_index(["loss", "group"])
    assert over_steps.loc[("fit", "b"), "state"] == "nonfinite" and over_steps.loc[("zero", "c"), "state"] == "undefined"
    assert ("zero", "a") not in over_steps.index  # absent: no point at all
    assert plot_heatmap(table, tmp_path / "h.png").stat().st_size > 0


def test_norm_of_reads_one_cell(mlp_case):
    stats = GradientProbe(mlp_case.model, mlp_case.groups).backward(mlp_case.losses(), mlp_case.weights)
    i, j = stats.losses.index("sparse"), stats.groups.index("trunk")
    assert stats.norm_of("sparse", "trunk") == stats.norm[i, j]
    assert stats.norm_of("sparse", "trunk", weighted=False) == stats.raw_norm[i, j]
    assert math.isnan(stats.norm_of("aux", "head"))
    with pytest.raises(KeyError, match="no group 'nope'"):
        stats.norm_of("fit", "nope")


def test_created_tensors_follow_the_gradients_device_and_dtype():
    placeholder = group_norm([None], torch.device("meta"))
    assert placeholder.device.type == "meta" and placeholder.dtype == torch.float64 and placeholder.ndim == 0
    measured = group_norm([torch.ones(3, dtype=torch.float32)], torch.device("cpu"))
    assert measured.dtype == torch.float64 and measured.item() == pytest.approx(math.sqrt(3))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_probe_on_cuda_matches_cpu():
    """Issue 12: the probe crashed on CUDA (a NaN placeholder created on the CPU)."""
    torch.manual_seed(0)
    cpu_model = nn.ModuleDict({"a": nn.Linear(6, 8), "b": nn.Linear(8, 3), "unused": nn.Linear(2, 2)}).double()
    x = torch.randn(5, 6, dtype=torch.float64)

    def losses(model, inputs):
        h = torch.tanh(model["a"](inputs))
        return {"fit": model["b"](h).square().mean(), "hidden": h.abs().mean()}

    weights = {"fit": 1.0, "hidden": 0.2}
    groups = lambda m: {"a": m["a"], "b": m["b"], "unused": m["unused"]}  # noqa: E731
    expected = GradientProbe(cpu_model, groups(cpu_model)).measure(losses(cpu_model, x), weights)
    model = copy.deepcopy(cpu_model).cuda()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    probe = GradientProbe(model, groups(model), optimizer=optimizer, cosine=True)
    stats = probe.backward(losses(model, x.cuda()), weights)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    np.testing.assert_allclose(stats.raw_norm, expected.raw_norm, rtol=1e-9)  # 'unused' absent on both
    assert stats.reached.tolist() == expected.reached.tolist()
    assert np.isfinite(stats.precond_norm[stats.reached]).all() and np.isnan(stats.precond_norm[~stats.reached]).all()
    assert stats.cosine.shape == (3, 2, 2) and abs(stats.cosine[0, 0, 1]) <= 1
