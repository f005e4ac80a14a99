"""Non-finite detection names the loss / parameter; clipping matches torch's global-norm formula."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from stlic.training.finite import (DeferredFiniteCheck, NonFiniteLossError, check_finite_losses,
                                   clip_and_check_gradients)


def test_non_finite_loss_and_weighted_loss_are_named():
    losses = {"rate": torch.tensor(0.1), "l1": torch.tensor(float("inf"))}
    with pytest.raises(NonFiniteLossError, match=r"loss 'l1' is inf at step 7"):
        check_finite_losses(losses, {"rate": 1.0, "l1": 1.0}, 7)
    with pytest.raises(NonFiniteLossError, match=r"weighted loss 'rate' is nan .*step 2"):
        check_finite_losses({"rate": torch.tensor(0.1)}, {"rate": float("nan")}, 2)
    check_finite_losses({"rate": torch.tensor(0.1)}, {"rate": 2.0}, 1)


def test_clipping_and_non_finite_gradient():
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    net(torch.randn(5, 3)).pow(2).sum().backward()
    grads = [p.grad.double().clone() for p in net.parameters()]
    norm = math.sqrt(sum(float(g.pow(2).sum()) for g in grads))
    returned = clip_and_check_gradients(net.named_parameters(), 0.5 * norm, step=1)
    assert returned == pytest.approx(norm, rel=1e-6)
    for before, p in zip(grads, net.parameters()):  # scaled by max_norm / norm (torch adds eps 1e-6)
        torch.testing.assert_close(p.grad.double(), before * 0.5 * norm / (norm + 1e-6), rtol=1e-5, atol=0)
    net[1].bias.grad[0] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"parameter '1.bias' is not finite at step 4"):
        clip_and_check_gradients(net.named_parameters(), None, step=4)


def test_deferred_check_names_the_first_non_finite_step_and_forgets_it():
    check = DeferredFiniteCheck()
    weights = {"rate": 1.0, "l1": 2.0}
    check.record(1, {"rate": torch.tensor(0.1), "l1": torch.tensor(0.2)}, weights, torch.tensor(3.0))
    assert check.first_error() is None
    check.record(2, {"rate": torch.tensor(0.1), "l1": torch.tensor(0.2)}, weights, torch.tensor(float("inf")))
    check.record(3, {"rate": torch.tensor(float("nan")), "l1": torch.tensor(0.2)}, weights, torch.tensor(1.0))
    assert check.first_error() == "gradient norm is inf at step 2"
    assert check.first_error() is None  # forgotten once read
    check.record(4, {"rate": torch.tensor(0.1), "l1": torch.tensor(float("nan"))}, weights, None)
    assert check.first_error() == "loss 'l1' is nan at step 4"
    check.record(5, {"rate": torch.tensor(3e38), "l1": torch.tensor(0.2)}, {"rate": 10.0, "l1": 1.0}, None)
    assert "weighted loss 'rate' is inf (weight 10.0) at step 5" == check.first_error()


def test_unchecked_clipping_returns_the_same_norm_as_a_tensor():
    net = nn.Linear(3, 2)
    net(torch.randn(4, 3)).pow(2).sum().backward()
    grads = [p.grad.clone() for p in net.parameters()]
    checked = clip_and_check_gradients(net.named_parameters(), 0.1, step=1)
    for p, g in zip(net.parameters(), grads):
        p.grad = g.clone()
    unchecked = clip_and_check_gradients(net.named_parameters(), 0.1, step=1, check=False)
    assert isinstance(unchecked, torch.Tensor) and unchecked.item() == checked
