"""torch.compile (inductor on CPU): the same groups, the same cell states and the same .grad as eager.

Compiling is slow (seconds per model), so the models are tiny and each test compiles once.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gradbalance import GradientProbe
from gradbalance.probe.groups import partition_parameters


class TwoHeads(nn.Module):
    """A trunk with BatchNorm and dropout; 'fit' reaches trunk and head, 'side' only the side branch; a
    constant buffer (as CompressAI's likelihood bounds) that the eager re-run must leave at its version."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Dropout(0.2))
        self.head = nn.Linear(8, 2)
        self.side = nn.Linear(4, 2)
        self.register_buffer("gain", torch.full((1,), 1.5))  # saved for backward by the compiled graph

    def forward(self, x):
        return {"y": self.head(self.trunk(x)) * self.gain, "s": self.side(x)}


GROUPS = {"trunk": r"^trunk\.", "head": r"^head\.", "side": r"^side\."}


def losses(out):
    return {"fit": out["y"].square().mean(), "side": out["s"].abs().mean(), "dead": (0 * out["y"]).sum()}


def run(model, calls, probe=None, seed=0):
    """``calls`` probed (or plain) steps on fixed inputs; returns grads, buffers and the RNG state after."""
    torch.manual_seed(seed)
    x = torch.randn(6, 4)
    grads = []
    for _ in range(calls):
        for p in model.parameters():
            p.grad = None
        out_losses = losses(model(x))
        if probe is None:
            sum(out_losses.values()).backward()
        else:
            probe.backward(out_losses)
        grads.append([p.grad.clone() for p in model.parameters()])
    return grads, [b.clone() for b in model.buffers()], torch.get_rng_state()


def states(probe):
    table = probe.table()
    return {(l, g): table.state(l, g) for l in table.losses for g in table.groups}


def build(where: str, state: dict) -> nn.Module:
    model = TwoHeads()
    model.load_state_dict(state)
    if where == "model":
        return torch.compile(model)
    model.trunk = torch.compile(model.trunk)  # only the trunk: names gain 'trunk._orig_mod.'
    return model


@pytest.mark.parametrize("where", ["model", "submodule"])
def test_compiled_cells_keep_their_eager_state_and_grad(where):
    torch.manual_seed(1)
    eager = TwoHeads()
    state = {k: v.clone() for k, v in eager.state_dict().items()}
    compiled, plain = build(where, state), build(where, state)
    eager_probe = GradientProbe(eager, GROUPS)
    compiled_probe = GradientProbe(compiled, GROUPS)  # the regexes match through '_orig_mod.'
    run(eager, 2, eager_probe)
    compiled_grads, compiled_buffers, compiled_rng = run(compiled, 2, compiled_probe)
    assert states(compiled_probe) == states(eager_probe)
    assert states(eager_probe)[("side", "head")] == "absent"
    assert compiled_probe.table().cell("side", "trunk") == "-" and compiled_probe.table().cell("fit", "side") == "-"
    assert compiled_probe.table().cell("dead", "head") == "0.0 ± 0.0"  # reached with a zero gradient: not absent
    # .grad as a plain backward of the compiled model; the eager re-run that recovers reachability
    # changes neither the BatchNorm statistics nor the random stream (dropout)
    plain_grads, plain_buffers, plain_rng = run(plain, 2)
    for probed_step, plain_step in zip(compiled_grads, plain_grads):
        for c, p in zip(probed_step, plain_step):
            torch.testing.assert_close(c, p, rtol=1e-5, atol=1e-7)
    for c, p in zip(compiled_buffers, plain_buffers):
        torch.testing.assert_close(c, p, rtol=1e-6, atol=1e-7)
    assert torch.equal(compiled_rng, plain_rng)


def test_names_resolve_through_wrappers():
    model = TwoHeads()
    plain = partition_parameters(model, GROUPS)
    for wrapped in (torch.compile(model), nn.DataParallel(model), torch.compile(nn.DataParallel(model))):
        groups = partition_parameters(wrapped, GROUPS)
        assert groups.param_names == plain.param_names and groups.names == plain.names
    with pytest.raises(ValueError, match=r"matched no parameters.*without the wrappers' '_orig_mod.'.*trunk.0.weight"):
        partition_parameters(torch.compile(model), {"x": r"^nope\."})
