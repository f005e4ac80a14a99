"""Measure what derive promises: re-probe with the derived weights, compare, iterate when needed.

:func:`compare_shares` puts the shares :func:`derive_coefficients` predicts beside the shares
re-measured with the derived weights (same model, data and steps). :func:`rebalance` repeats
derive → re-measure, composing the multipliers, until every re-measured share is within
``tolerance`` percentage points of its target: the way to balance optimizer-aware (Adam) shares,
which do not scale linearly with the weights, and a fixed-point correction when a training run's
trajectory moves with the weights.

``measure(multipliers)`` must return the :class:`ContributionTable` of a probe run whose weights are
the probed ones times ``multipliers`` (``{loss: m}``); ``gradbalance derive --verify`` re-runs the
saved run's target that way.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd

from gradbalance.functional.derive import Coefficient, DerivedCoefficients, derive_coefficients, scale_coefficient
from gradbalance.report.table import ContributionTable
from gradbalance.functional.target_shares import Target

MeasureFn = Callable[[Mapping[str, float]], ContributionTable]


@dataclass(frozen=True)
class ShareCheck:
    """Predicted against re-measured shares, one row per targeted or present (loss, group).

    ``frame`` columns: lower, upper (target interval, NaN = free), predicted, measured (percent),
    error = measured - predicted, miss = distance of the measured share from the target interval.
    """

    frame: pd.DataFrame

    @property
    def max_miss(self) -> float:
        """Largest distance of a re-measured share from its target (percentage points)."""
        return float(self.frame["miss"].max(skipna=True)) if self.frame["miss"].notna().any() else 0.0

    @property
    def max_prediction_error(self) -> float:
        """Largest |measured - predicted| (percentage points)."""
        return float(self.frame["error"].abs().max(skipna=True)) if self.frame["error"].notna().any() else 0.0

    def to_string(self) -> str:
        return self.frame.round(3).to_string()


def compare_shares(result: DerivedCoefficients, measured: ContributionTable) -> ShareCheck:
    """Shares ``result`` predicts beside those ``measured`` with its coefficients."""
    losses, groups = list(result.predicted.index), list(result.predicted.columns)
    index = pd.MultiIndex.from_product([losses, groups], names=["loss", "group"])

    def flat(frame: pd.DataFrame) -> np.ndarray:
        return frame.reindex(index=losses, columns=groups).to_numpy(dtype=float).ravel()

    frame = pd.DataFrame({"lower": flat(result.lower), "upper": flat(result.upper),
                          "predicted": flat(result.predicted), "measured": flat(measured.mean)}, index=index)
    frame["error"] = frame["measured"] - frame["predicted"]
    targeted = frame["lower"].notna()
    frame["miss"] = (np.maximum(frame["measured"] - frame["upper"], 0)
                     + np.maximum(frame["lower"] - frame["measured"], 0)).where(targeted)
    return ShareCheck(frame[frame["predicted"].notna() | frame["measured"].notna()])


@dataclass(frozen=True)
class Rebalanced:
    """Result of :func:`rebalance`: final coefficients, and one :class:`ShareCheck` per iteration."""

    coefficients: dict[str, Coefficient]
    multipliers: dict[str, float]  # relative to the first measurement's weights
    checks: tuple[ShareCheck, ...]
    last: DerivedCoefficients
    converged: bool


def rebalance(measure: MeasureFn, target: Target, *, table: Optional[ContributionTable] = None,
              fixed: Optional[Mapping[str, Coefficient]] = None, current: Optional[Mapping[str, Coefficient]] = None,
              tolerance: float = 1.0, max_iterations: int = 5, require_convergence: bool = True) -> Rebalanced:
    """Derive, re-measure, repeat until the re-measured shares are within ``tolerance`` pp of the target.

    ``table``: the first measurement (default ``measure({})``). ``fixed``/``current``: as in
    :func:`derive_coefficients`, in terms of the first measurement's weights. Raises ValueError
    naming the largest miss when ``max_iterations`` re-measurements do not converge (unless
    ``require_convergence=False``).
    """
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")
    table = measure({}) if table is None else table
    base = {**{l: float(w) for l, w in table.weights.items()}, **dict(current or {})}
    total = {l: 1.0 for l in table.losses}
    checks = []
    for _ in range(max_iterations):
        now = {l: scale_coefficient(base[l], total[l]) for l in table.losses}
        result = derive_coefficients(table, target, fixed=fixed, current=now, assume_linear=True)
        total = {l: total[l] * result.multipliers[l] for l in total}
        table = measure(dict(total))
        checks.append(compare_shares(result, table))
        if checks[-1].max_miss <= tolerance:
            break
    converged = checks[-1].max_miss <= tolerance
    if require_convergence and not converged:
        raise ValueError(f"the re-measured shares did not converge to the target: after {len(checks)} "
                         f"re-measurement(s) the largest miss is {checks[-1].max_miss:.3g} percentage points "
                         f"(tolerance {tolerance:g})")
    return Rebalanced(coefficients={l: scale_coefficient(base[l], total[l]) for l in total}, multipliers=total,
                      checks=tuple(checks), last=result, converged=converged)
