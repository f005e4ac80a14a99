"""The controller's loss-value channel: a jump in a loss's scale is followed before the next probe."""
import json

import pytest
import torch
from torch import nn

from gradbalance import Balancer, BalancerSpec


def _run(loss_values: bool, jump_at: int = 205, steps: int = 215):
    torch.manual_seed(0)
    model = nn.ModuleDict({"a": nn.Linear(4, 4), "b": nn.Linear(4, 1)}).double()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    balancer = Balancer(model, {"a": model["a"], "b": model["b"]}, {"a": {"x": 50.0, "y": 50.0}},
                        weights={"x": 1.0, "y": 1.0}, every=10, fixed=["x"], loss_values=loss_values)
    data = torch.Generator().manual_seed(1)
    weights = []
    for t in range(steps):
        inputs = torch.randn(16, 4, generator=data, dtype=torch.float64)
        hidden = model["a"](inputs)
        scale = 3.0 if t >= jump_at else 1.0
        optimizer.zero_grad()
        balancer.backward({"x": scale * hidden.square().mean(), "y": model["b"](hidden).square().mean()})
        optimizer.step()
        weights.append(balancer.weights["y"])
    return weights, balancer


def test_a_jump_in_a_loss_scale_updates_before_the_next_probe():
    weights, balancer = _run(loss_values=True)
    # steps 205-209 are between the probes at 200 and 210: only the loss values can move y's weight there
    assert weights[209] > 1.3 * weights[204], weights[200:210]
    # no update moves a coefficient by more than max_change (2)
    assert all(max(b / a, a / b) <= 2.0 + 1e-12 for a, b in zip(weights, weights[1:]))
    without, _ = _run(loss_values=False)
    assert without[209] == without[204]


def test_the_state_resumes_exactly_with_the_channel():
    _, balancer = _run(loss_values=True, steps=203)
    state = balancer.state_dict()
    _, fresh = _run(loss_values=True, steps=1)
    fresh.load_state_dict(state)
    assert json.dumps(fresh.law.state_dict()) == json.dumps(balancer.law.state_dict())  # NaN-safe equality


def test_loss_values_is_validated():
    with pytest.raises(ValueError, match="loss_values must be true or false"):
        BalancerSpec(targets="equal", loss_values="yes")
