"""A toy whose natural gradient shares drift, for the Balancer tests.

A tanh MLP (groups ``trunk`` and ``head``) fits noisy ``sin`` targets from seeded minibatches, with
three losses: ``fit`` (MSE to the targets), ``prior`` (output energy) and ``energy`` (hidden
activations, reaching the trunk only). As ``fit`` is learned its gradient shrinks while the
regularisers' grow: at the initial weights the share of ``fit`` in the head falls from about 94 %
(first probes) to about 83 % (second half). Float64, one thread-independent seeded stream: deterministic.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

INITIAL_WEIGHTS = {"fit": 1.0, "prior": 0.1, "energy": 0.05}
#: reachable: two free coefficients (fit is held) for two independent constraints
TARGETS = {"head": {"fit": 70.0, "prior": 30.0}, "trunk": {"energy": 10.0}}


def drifting_toy(seed: int = 0) -> tuple[nn.ModuleDict, dict, Callable[[], dict]]:
    """``(model, groups, next_losses)``; each ``next_losses()`` call draws the next minibatch of 32."""
    torch.manual_seed(seed)
    model = nn.ModuleDict({"trunk": nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 16), nn.Tanh()),
                           "head": nn.Linear(16, 4)}).double()
    data = torch.Generator().manual_seed(seed + 1)
    x_all = torch.randn(512, 8, generator=data, dtype=torch.float64)
    y_all = torch.sin(2 * x_all[:, :4]) + 0.3 * torch.randn(512, 4, generator=data, dtype=torch.float64)
    batches = torch.Generator().manual_seed(seed + 2)

    def next_losses() -> dict:
        index = torch.randint(0, len(x_all), (32,), generator=batches)
        hidden = model["trunk"](x_all[index])
        out = model["head"](hidden)
        return {"fit": (out - y_all[index]).square().mean(), "prior": out.square().mean(),
                "energy": hidden.square().mean()}

    return model, {"trunk": model["trunk"], "head": model["head"]}, next_losses
