"""derive_coefficients: feasible targets are reproduced by re-measuring, infeasible ones give the
least-squares compromise (checked against a brute-force grid search)."""
from __future__ import annotations

import numpy as np
import pytest

from gradbalance import ContributionTable, GradientProbe, derive_coefficients
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


def test_bad_targets_are_named():
    case = make_mlp_case()
    table = measure_table(case, {"fit": 1.0, "sparse": 0.3, "aux": 0.05})
    with pytest.raises(ValueError, match="does not reach group 'head'"):
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
