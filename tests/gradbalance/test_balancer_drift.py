"""Must-show of issue 10: on a toy whose natural shares drift, the online Balancer holds every
reachable target within 3 percentage points over the second half of the run; static derive (the
paper's procedure: measure early, solve once, keep the coefficients) on the same run misses by more.

Shares are recomputed here from the recorded norms (``norm / Σ norm`` per step and group), not taken
from the balancer's own bookkeeping.
"""
from __future__ import annotations

import pandas as pd
import torch

from balancer_cases import INITIAL_WEIGHTS, TARGETS, drifting_toy
from gradbalance import Balancer, ContributionTable, GradientProbe, derive_coefficients

STEPS, EVERY, EARLY_PROBES = 400, 5, 4


def train(toy, backward, steps: int = STEPS) -> None:
    model, _, next_losses = toy
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        optimizer.zero_grad()
        backward(next_losses())
        optimizer.step()


def mean_shares(records: pd.DataFrame, first_step: int = 0, last_step: int = STEPS) -> pd.Series:
    """Mean per-step share (%) of each (loss, group) over probed steps in [first_step, last_step)."""
    data = records[(records.step >= first_step) & (records.step < last_step)].copy()
    data["share"] = 100 * data.norm / data.groupby(["step", "group"]).norm.transform("sum")
    return data.groupby(["loss", "group"]).share.mean()


def misses(shares: pd.Series) -> dict[str, float]:
    """|mean share - target| in percentage points, per targeted cell."""
    return {f"{l}/{g}": abs(float(shares[l, g]) - t) for g, cells in TARGETS.items() for l, t in cells.items()}


def probed_run(weights: dict) -> pd.DataFrame:
    toy = drifting_toy()
    probe = GradientProbe(toy[0], toy[1], loss_order=list(INITIAL_WEIGHTS), every=EVERY)
    train(toy, lambda losses: probe.backward(losses, weights))
    return probe.records


def test_online_balancer_holds_drifting_targets_where_static_derive_misses():
    natural = probed_run(INITIAL_WEIGHTS)
    early, late = mean_shares(natural, 0, EARLY_PROBES * EVERY), mean_shares(natural, STEPS // 2)
    assert early["fit", "head"] - late["fit", "head"] > 5  # the shares drift by themselves

    early_table = ContributionTable.from_records(natural[natural.step < EARLY_PROBES * EVERY])
    static = derive_coefficients(early_table, TARGETS, fixed={"fit": 1.0})
    assert static.feasible  # reachable: the early measurement is met exactly
    static_miss = misses(mean_shares(probed_run(static.coefficients), STEPS // 2))

    toy = drifting_toy()
    balancer = Balancer(toy[0], toy[1], TARGETS, weights=INITIAL_WEIGHTS, every=EVERY, ema=0.8, fixed=["fit"])
    train(toy, balancer.backward)
    online_miss = misses(mean_shares(balancer.history, STEPS // 2))
    assert not balancer.misses  # the solver reached every target at each update

    print(f"\nmean |share - target| over steps {STEPS // 2}..{STEPS} (pp): online {online_miss}; static {static_miss}")
    assert max(online_miss.values()) <= 3.0
    assert max(static_miss.values()) > 3.0
    assert max(static_miss.values()) > max(online_miss.values()) + 1.0
