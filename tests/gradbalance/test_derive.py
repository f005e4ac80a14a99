"""derive_coefficients: feasible targets are reproduced by re-measuring, infeasible ones give the
least-squares compromise (checked against a brute-force grid search)."""
from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from gradbalance import ContributionTable, GradientProbe, compare_shares, derive_coefficients, derive_from_norms
from gradbalance.targets.examples import TinyAutoencoder, example_losses
from gradbalance_cases import make_autoencoder_case, make_mlp_case


def measure_table(case, weights) -> ContributionTable:
    probe = GradientProbe(case.model, case.groups, loss_order=list(weights))
    probe.measure(case.losses(), weights)
    return probe.table()


def test_feasible_target_reproduced_by_remeasuring():
    case = make_autoencoder_case()
    hidden = {"rate": 0.05, "l2": 0.5, "l1": 0.3}
    target_table = measure_table(case, hidden)  # shares at known coefficients: a feasible target
    target = {g: {l: float(target_table.mean.loc[l, g]) for l in target_table.losses
                  if not np.isnan(target_table.mean.loc[l, g])} for g in target_table.groups}
    table = measure_table(case, case.weights)
    result = derive_coefficients(table, target, fixed={"rate": 0.05})
    assert result.feasible and result.residual < 1e-8
    for loss, value in hidden.items():
        assert result.coefficients[loss] == pytest.approx(value, rel=1e-6)
    remeasured = measure_table(case, result.coefficients)
    np.testing.assert_allclose(remeasured.mean.to_numpy(), target_table.mean.to_numpy(), rtol=1e-6)


def test_infeasible_target_is_the_least_squares_compromise():
    case = make_mlp_case()
    weights = {"fit": 1.0, "sparse": 0.3, "aux": 0.05}
    table = measure_table(case, weights)
    target = {"trunk": {"fit": 50.0, "sparse": 50.0}, "head": {"fit": 90.0, "sparse": 10.0}}
    result = derive_coefficients(table, target, fixed={"fit": 1.0, "aux": 0.05})
    assert not result.feasible and result.residual > 0.1

    # brute force: the shares under multiplier m of 'sparse' from the measured norms, on a fine grid
    norms = {(l, g): table.mean.loc[l, g] / weights[l] for l in weights for g in ("trunk", "head")}

    def cost(sparse: float) -> float:
        coef = {**weights, "sparse": sparse}
        total = 0.0
        for group, shares in target.items():
            denominator = np.nansum([coef[l] * norms[l, group] for l in weights])
            total += sum((np.log(100 * coef[l] * norms[l, group] / denominator) - np.log(t)) ** 2
                         for l, t in shares.items())
        return total

    grid = np.exp(np.linspace(np.log(1e-3), np.log(1e3), 20001))
    best = grid[np.argmin([cost(c) for c in grid])]
    assert result.coefficients["sparse"] == pytest.approx(best, rel=2e-3)
    assert result.residual == pytest.approx(np.sqrt(cost(result.coefficients["sparse"]) / 4), rel=1e-9)
    assert result.untargeted == ()


def test_equal_bounds_and_ranges():
    case = make_autoencoder_case()
    table = measure_table(case, case.weights)
    equal = derive_coefficients(table, "equal", current={"rate": (0.001, 0.01)})
    assert isinstance(equal.coefficients["rate"], tuple)
    assert equal.coefficients["rate"] == pytest.approx((0.001, 0.01))  # first loss held by default
    assert equal.lower.loc["l2", "decoder"] == 50.0 and equal.lower.loc["l2", "encoder"] == pytest.approx(100 / 3)
    log_miss = np.log(equal.predicted / equal.lower).to_numpy()
    assert equal.residual == pytest.approx(np.sqrt(np.nanmean(log_miss ** 2)), rel=1e-9)
    bounds = derive_coefficients(table, {"l1": (20, 30), "rate": (0, 40)}, fixed={"l2": 1.0})
    assert bounds.feasible
    assert 20 - 1e-6 <= bounds.predicted.loc["l1", "encoder"] <= 30 + 1e-6
    assert 20 - 1e-6 <= bounds.predicted.loc["l1", "decoder"] <= 30 + 1e-6
    assert bounds.predicted.loc["rate", "encoder"] <= 40 + 1e-6
    scaled = derive_coefficients(table, "equal", current={"rate": (0.001, 0.01)}, fixed={"l2": 2.0})
    m = scaled.multipliers["rate"]
    assert scaled.coefficients["rate"] == pytest.approx((0.001 * m, 0.01 * m))  # both ends by one factor
    held = derive_coefficients(table, "equal", current={"rate": (0.001, 0.01)}, fixed={"rate": (0.003, 0.03)})
    assert held.coefficients["rate"] == (0.003, 0.03)  # exactly as given, not 0.001 * 3 rounded
    assert held.multipliers["rate"] == pytest.approx(3.0)
    with pytest.raises(ValueError, match=r"fixed rate=\(0.003, 0.05\) is not a multiple of its current value"):
        derive_coefficients(table, "equal", current={"rate": (0.001, 0.01)}, fixed={"rate": (0.003, 0.05)})


def test_bad_targets_are_named():
    case = make_mlp_case()
    table = measure_table(case, {"fit": 1.0, "sparse": 0.3, "aux": 0.05})
    with pytest.raises(ValueError, match="no path: aux to head"):
        derive_coefficients(table, {"head": {"aux": 10.0}})
    with pytest.raises(ValueError, match="names group 'nope'"):
        derive_coefficients(table, {"nope": {"fit": 10.0}})
    with pytest.raises(ValueError, match="names loss 'typo'"):
        derive_coefficients(table, {"typo": (1, 2)})
    with pytest.raises(ValueError, match="unknown target"):
        derive_coefficients(table, "paper")
    with pytest.raises(ValueError, match="fixed names unknown"):
        derive_coefficients(table, "equal", fixed={"x": 1.0})


def test_placeholder_and_absent_cells_in_a_target_file():
    case = make_mlp_case()
    weights = {"fit": 1.0, "sparse": 0.3, "aux": 0.05}
    table = measure_table(case, weights)
    absent = [(l, g) for l in table.losses for g in table.groups if np.isnan(table.mean.loc[l, g])]
    assert absent, "the MLP case has a loss that misses a group"
    loss, group = absent[0]
    partial = {group: {loss: 0.0}, "trunk": {"fit": 60.0, "sparse": None}}
    result = derive_coefficients(table, partial, fixed={"fit": 1.0})
    assert np.isnan(result.lower.loc["sparse", "trunk"])  # None: not targeted
    assert result.lower.loc["fit", "trunk"] == 60.0
    with pytest.raises(ValueError, match="sets no share"):
        derive_coefficients(table, {"trunk": {"fit": None, "sparse": None}})
    present = next((l, g) for l in table.losses for g in table.groups if not np.isnan(table.mean.loc[l, g]))
    with pytest.raises(ValueError, match=r"must be in \(0, 100\]"):
        derive_coefficients(table, {present[1]: {present[0]: 0.0}})


def varying_batches(steps: int, seed: int = 0) -> list:
    """Batches whose intensity and content change a lot from step to step (per-step shares vary)."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(2, 3, 16, 16, dtype=torch.float64, generator=generator) * (0.2 + 2.0 * (t % 4) / 3)
            for t in range(steps)]


def measure_steps(model, batches, multipliers, base, optimizer=None, column="norm") -> ContributionTable:
    """Probe every batch with weights base * multipliers (training when an optimizer is given)."""
    probe = GradientProbe(model, {"encoder": model.encoder, "decoder": model.decoder},
                          loss_order=list(base), optimizer=optimizer)
    weights = {k: v * multipliers.get(k, 1.0) for k, v in base.items()}
    for t, x in enumerate(batches):
        torch.manual_seed(100 + t)
        losses = example_losses(model, x)
        if optimizer is None:
            probe.measure(losses, weights)
        else:
            optimizer.zero_grad(set_to_none=True)
            probe.backward(losses, weights)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
    probe.remove_hooks()
    return probe.table(column=column)


BASE = {"rate": 0.01, "l2": 1.0, "l1": 0.1}
HIDDEN = {"rate": 3.0, "l2": 1.0, "l1": 0.25}  # multipliers giving a reachable target


def as_target(table: ContributionTable) -> dict:
    return {g: {l: float(table.mean.loc[l, g]) for l in table.losses if not np.isnan(table.mean.loc[l, g])}
            for g in table.groups}


def test_multi_step_reachable_target_is_hit_exactly():
    """Issue 9.1: fitting the mean of the per-step shares missed a reachable target by pp."""
    torch.manual_seed(1)
    model = TinyAutoencoder(channels=4, latent=3).double()
    batches = varying_batches(20)
    target_table = measure_steps(model, batches, HIDDEN, BASE)
    table = measure_steps(model, batches, {}, BASE)
    assert np.nanmax(table.std.to_numpy()) > 5  # the per-step shares really vary
    result = derive_coefficients(table, as_target(target_table), fixed={"l2": 1.0})
    assert result.feasible and result.max_error < 1e-6
    for loss, m in HIDDEN.items():
        assert result.multipliers[loss] == pytest.approx(m, rel=1e-6)
    check = compare_shares(result, measure_steps(model, batches, result.multipliers, BASE))
    assert check.max_miss < 1e-6 and check.max_prediction_error < 1e-6


def test_derive_then_reprobe_a_training_run_lands_within_one_point():
    """Derived weights, re-probed on a 20-step training run from the same start, meet the target."""
    torch.manual_seed(1)
    start = TinyAutoencoder(channels=4, latent=3).double()
    batches = varying_batches(20, seed=1)

    def measure(multipliers):
        model = copy.deepcopy(start)
        return measure_steps(model, batches, multipliers, BASE, torch.optim.Adam(model.parameters(), lr=1e-3))

    target = as_target(measure(HIDDEN))
    result = derive_coefficients(measure({}), target, fixed={"l2": 1.0})
    check = compare_shares(result, measure(result.multipliers))
    assert check.max_miss <= 1.0, check.to_string()
    assert set(check.frame.columns) == {"lower", "upper", "predicted", "measured", "error", "miss"}


def hand_table(norms: dict, steps: int = 1) -> ContributionTable:
    """A table from weighted norms {(loss, group): value}, NaN = absent, weights 1."""
    rows = [dict(step=t, loss=l, group=g, weight=1.0, value=0.0, norm=v * (1 + 0.1 * t), reached=not np.isnan(v))
            for t in range(steps) for (l, g), v in norms.items()]
    return ContributionTable.from_records(pd.DataFrame(rows))


def test_undetermined_scale_keeps_its_current_weight():
    """Issue 9.2: a group whose losses no held loss ties down kept drifting to ~1e-9."""
    nan = float("nan")
    table = hand_table({("rate", "main"): 1.0, ("l2", "main"): 3.0, ("lpips", "main"): 0.5,
                        ("lpips", "refiner"): 2.0, ("adversarial", "refiner"): 1.0,
                        ("rate", "refiner"): nan, ("l2", "refiner"): nan, ("adversarial", "main"): nan}, steps=3)
    result = derive_coefficients(table, {"refiner": {"lpips": 30.0, "adversarial": 70.0}},
                                 current={"lpips": 0.24, "adversarial": 0.01})
    assert result.anchors == {"lpips": ("lpips", "adversarial")}
    assert result.coefficients["lpips"] == 0.24  # kept, not drifted
    assert result.coefficients["adversarial"] == pytest.approx(0.01 * (70 / 30) * 2.0, rel=1e-8)
    assert result.feasible and result.coefficients["rate"] == 1.0 and result.coefficients["l2"] == 1.0


def test_targets_that_cannot_sum_to_100_are_refused():
    nan = float("nan")
    table = hand_table({("l2", "dec"): 1.0, ("l1", "dec"): 2.0, ("l2", "ref"): nan, ("l1", "ref"): nan,
                        ("lpips", "ref"): 1.0, ("lpips", "dec"): 1.0, ("adv", "ref"): 3.0, ("adv", "dec"): nan})
    with pytest.raises(ValueError, match=r"group 'ref' sum to 95 %, but every loss reaching it \(lpips, adv\)"):
        derive_coefficients(table, {"ref": {"lpips": 30.0, "adv": 65.0}})
    single = hand_table({("l2", "dec"): 1.0, ("l1", "dec"): nan, ("l1", "enc"): 1.0, ("l2", "enc"): nan})
    with pytest.raises(ValueError, match="group 'dec' sum to 60 %"):
        derive_coefficients(single, {"dec": {"l2": 60.0}})
    with pytest.raises(ValueError, match="group 'dec' sum to 130 %, more than 100"):
        derive_coefficients(table, {"dec": {"l2": 70.0, "l1": 60.0}})
    assert derive_coefficients(table, {"dec": {"l2": 70.0}}).feasible  # the others take the rest


def test_text_percentages_name_the_cell():
    table = hand_table({("l2", "dec"): 1.0, ("l1", "dec"): 2.0})
    with pytest.raises(ValueError, match="target share of 'l2' in 'dec' must be a number, got 'fifty'"):
        derive_coefficients(table, {"dec": {"l2": "fifty", "l1": 50}})
    with pytest.raises(ValueError, match="bound of 'l1' must be a number, got 'low'"):
        derive_coefficients(table, {"l1": ["low", 50]})


def test_derive_from_norms_is_the_table_solver():
    frames = [pd.DataFrame({"dec": [1.0, 2.0 + t], "enc": [3.0, float("nan")]}, index=["l2", "l1"]) for t in range(3)]
    weights = {"l2": 2.0, "l1": 0.5}
    result = derive_from_norms(frames, weights, {"dec": {"l2": 50.0, "l1": 50.0}}, fixed={"l2": 2.0})
    expected_l1 = 0.5 * np.mean([1.0 / (2.0 + t) for t in range(3)])  # not exact: solved on the mean share
    assert result.coefficients["l2"] == 2.0 and result.feasible
    shares = [100 * result.multipliers["l1"] * (2.0 + t) / (1.0 + result.multipliers["l1"] * (2.0 + t)) for t in range(3)]
    assert np.mean(shares) == pytest.approx(50.0, abs=1e-8)
    assert result.coefficients["l1"] != pytest.approx(expected_l1, rel=1e-3)
    single = derive_from_norms(frames[0], weights, "equal", fixed={"l2": 2.0})
    assert single.coefficients["l1"] == pytest.approx(0.5 * 1.0 / 2.0, rel=1e-8)
