"""derive_coefficients: loss weights that give prescribed gradient shares (inverse of Table I).

Scaling loss l by a multiplier m_l scales its gradient in every group by m_l, so from the measured
shares s_lg (in percent, at the probed weights) the shares under new weights are

    s_lg(m) = m_l s_lg / sum_{k present in g} m_k s_kg .

All groups are solved jointly in log space (ST-LIC, Sec. III: balancing the shares of Table I):

    min_{log m}  sum_{(l,g) targeted} (log s_lg(m) - log t_lg)^2 ,

with fixed coefficients held (shares are scale-free, so one coefficient must be fixed; by default
the first loss of the table keeps its weight). A bounds target ``{loss: (lo%, hi%)}`` costs nothing
inside the interval and the log-distance to it outside. New coefficients are ``m_l * current_l``; a
coefficient given as a range (e.g. QVRF's rate ``[lo, hi]``) has both ends scaled by m_l.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np
import pandas as pd

from gradbalance.table import ContributionTable

Coefficient = Union[float, tuple[float, float]]
Target = Union[str, Mapping[str, Mapping[str, float]], Mapping[str, Sequence[float]]]


@dataclass(frozen=True)
class DerivedCoefficients:
    """Result of :func:`derive_coefficients`.

    ``residual`` is the root-mean-square log-share error over the targeted cells (0 when the
    target is met exactly); ``max_error`` the largest miss in percentage points.
    """

    coefficients: dict[str, Coefficient]
    multipliers: dict[str, float]
    predicted: pd.DataFrame  # shares (percent) under the new coefficients, NaN = absent
    lower: pd.DataFrame  # targeted interval per cell (lower = upper for point targets), NaN = free
    upper: pd.DataFrame
    residual: float
    max_error: float
    untargeted: tuple[str, ...] = field(default=())  # losses held at their weight: nothing to fit

    @property
    def feasible(self) -> bool:
        """Whether every target is met to 0.01 percentage points."""
        return self.max_error < 1e-2


def target_bounds(table: ContributionTable, target: Target) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-cell (lower, upper) percent targets from ``"equal"``, ``{group: {loss: %}}`` or ``{loss: (lo, hi)}``."""
    present = table.mean.notna()
    lower = pd.DataFrame(np.nan, index=table.mean.index, columns=table.mean.columns)
    upper = lower.copy()
    if isinstance(target, str):
        if target != "equal":
            raise ValueError(f"unknown target {target!r}: use 'equal', {{group: {{loss: percent}}}} or "
                             "{loss: [min%, max%]}")
        equal = 100.0 / present.sum(axis=0)
        lower = upper = present.mul(equal, axis=1).where(present)
        return lower, upper
    if not isinstance(target, Mapping) or not target:
        raise ValueError(f"target must be 'equal' or a non-empty mapping, got {target!r}")
    if all(isinstance(v, Mapping) for v in target.values()):
        for group, shares in target.items():
            if group not in lower.columns:
                raise ValueError(f"target names group {group!r}; the table has {list(lower.columns)}")
            for loss, percent in shares.items():
                if percent is None:  # a placeholder (YAML null): this cell is not targeted
                    continue
                if percent == 0 and loss in lower.index and not present.loc[loss, group]:
                    continue  # "0" for a loss that cannot reach the group: consistent, nothing to fit
                _check_cell(table, loss, group)
                if not 0 < float(percent) <= 100:
                    raise ValueError(f"target share of {loss!r} in {group!r} must be in (0, 100], got {percent}")
                lower.loc[loss, group] = upper.loc[loss, group] = float(percent)
        if lower.isna().all().all():
            raise ValueError("the target sets no share: every cell is null (a placeholder) or absent; "
                             "fill in the percentages")
        return lower, upper
    for loss, bounds in target.items():
        if isinstance(bounds, (str, Mapping)) or not isinstance(bounds, Sequence) or len(bounds) != 2:
            raise ValueError(f"bounds target for {loss!r} must be [min%, max%], got {bounds!r}")
        lo, hi = map(float, bounds)
        if not 0 <= lo <= hi <= 100 or hi == 0:
            raise ValueError(f"bounds of {loss!r} must satisfy 0 <= min <= max <= 100, max > 0; got {bounds!r}")
        if loss not in lower.index:
            raise ValueError(f"target names loss {loss!r}; the table has {list(lower.index)}")
        lower.loc[loss] = lower.loc[loss].where(~present.loc[loss], lo)
        upper.loc[loss] = upper.loc[loss].where(~present.loc[loss], hi)
    return lower, upper


def _check_cell(table: ContributionTable, loss: str, group: str) -> None:
    if loss not in table.mean.index:
        raise ValueError(f"target names loss {loss!r}; the table has {list(table.mean.index)}")
    if np.isnan(table.mean.loc[loss, group]):
        raise ValueError(f"loss {loss!r} does not reach group {group!r}: its share there cannot be targeted")


def predicted_shares(shares: np.ndarray, multipliers: np.ndarray) -> np.ndarray:
    """``s_lg(m) = m_l s_lg / sum_k m_k s_kg`` in percent (NaN where absent)."""
    scaled = multipliers[:, None] * shares
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100.0 * scaled / np.nansum(scaled, axis=0, keepdims=True)


def derive_coefficients(table: ContributionTable, target: Target, *,
                        fixed: Optional[Mapping[str, Coefficient]] = None,
                        current: Optional[Mapping[str, Coefficient]] = None) -> DerivedCoefficients:
    """Loss coefficients whose gradient shares best match ``target`` (see module docstring).

    Args:
        table: measured shares (and the mean weights they were measured with).
        target: ``"equal"``, ``{group: {loss: percent}}`` (e.g. the paper's Table I; a ``None``
            cell is not targeted, a ``0`` cell must be one the loss cannot reach) or
            ``{loss: (min%, max%)}`` applied in every group the loss reaches.
        fixed: coefficients to hold, ``{loss: value}`` (same form as ``current``).
        current: what each multiplier scales (default: the measured weights); give the configured
            ``(lo, hi)`` range of a loss whose weight was drawn per batch (QVRF's rate).
    """
    losses = list(table.mean.index)
    for loss, weight in table.weights.items():
        if not (math.isfinite(weight) and weight != 0):
            raise ValueError(f"loss {loss!r} was measured with weight {weight!r}; a nonzero weight "
                             "is needed to know how its share scales")
    current = {**{l: float(w) for l, w in table.weights.items()}, **dict(current or {})}
    fixed = dict(fixed) if fixed else {losses[0]: current[losses[0]]}
    unknown = set(fixed) - set(losses)
    if unknown:
        raise ValueError(f"fixed names unknown loss(es) {sorted(unknown)}; the table has {losses}")
    lower, upper = target_bounds(table, target)
    shares = table.mean.to_numpy(dtype=float)
    if np.any(shares[lower.notna().to_numpy()] <= 0):
        raise ValueError("a targeted loss has a zero measured share; scaling cannot change it")
    log_lo, log_hi = np.log(lower.to_numpy()), np.log(upper.to_numpy())
    targeted = ~np.isnan(log_lo)
    ratios = {l: _base(fixed[l]) / _base(current[l]) for l in fixed}
    if any(not r > 0 for r in ratios.values()):
        raise ValueError(f"fixed coefficients must have the sign of the current ones: {fixed} vs {current}")
    start = np.array([math.log(ratios[l]) if l in fixed else 0.0 for l in losses])
    free = [i for i, l in enumerate(losses) if l not in fixed and targeted[i].any()]

    def residuals(x: np.ndarray) -> np.ndarray:
        log_m = start.copy()
        log_m[free] = x
        log_s = np.log(predicted_shares(shares, np.exp(log_m - log_m.max())))[targeted]
        return np.maximum(log_s - log_hi[targeted], 0) + np.minimum(log_s - log_lo[targeted], 0)

    log_m = start.copy()
    if free:
        from scipy.optimize import least_squares  # imported here: scipy is slow to import

        solution = least_squares(residuals, np.zeros(len(free)), xtol=1e-14, ftol=1e-14, gtol=1e-14)
        log_m[free] = solution.x
    multipliers = dict(zip(losses, np.exp(log_m).tolist()))
    predicted = pd.DataFrame(predicted_shares(shares, np.exp(log_m)), index=table.mean.index,
                             columns=table.mean.columns)
    r = residuals(log_m[free]) if targeted.any() else np.zeros(0)
    miss = np.maximum(predicted - upper, 0) + np.maximum(lower - predicted, 0)
    return DerivedCoefficients(
        coefficients={l: _scale(current[l], multipliers[l]) for l in losses},
        multipliers=multipliers, predicted=predicted, lower=lower, upper=upper,
        residual=float(np.sqrt(np.mean(r ** 2))) if r.size else 0.0,
        max_error=float(np.nanmax(miss.to_numpy())) if targeted.any() else 0.0,
        untargeted=tuple(l for i, l in enumerate(losses) if l not in fixed and not targeted[i].any()),
    )


def _base(value: Coefficient) -> float:
    """The scalar a coefficient scales by: itself, or the lower end of a range."""
    return float(value[0]) if isinstance(value, (tuple, list)) else float(value)


def _scale(value: Coefficient, multiplier: float) -> Coefficient:
    if isinstance(value, (tuple, list)):
        return tuple(float(v) * multiplier for v in value)
    return float(value) * multiplier
