"""derive_coefficients: loss weights that give prescribed gradient shares (inverse of Table I).

Scaling loss l by a multiplier m_l scales its gradient in every group by m_l, so from the
weighted norms n_lgt measured at probed step t the shares under new weights are

    s_lgt(m) = m_l n_lgt / sum_{k present in g at t} m_k n_kgt ,   s̄_lg(m) = mean_t s_lgt(m)

(s̄ is exactly what Table I reports: the mean of the per-step shares). All groups are solved
jointly in log space (ST-LIC, Sec. III: balancing the shares of Table I):

    min_{log m}  sum_{(l,g) targeted} (log s̄_lg(m) - log t_lg)^2 .

A bounds target ``{loss: (lo%, hi%)}`` costs nothing inside the interval and the log-distance to
it outside. Fitting the per-step records (not the mean shares as one measurement) makes a target
that some weights reach exactly come out exactly. Shares are scale-free: losses whose targets tie
them to no held loss (``fixed``, or a loss reaching a targeted group without a target of its own)
keep their common scale, i.e. the first of them keeps its current weight
(:attr:`DerivedCoefficients.anchors`). New coefficients are ``m_l * current_l``; a coefficient given
as a range (e.g. QVRF's rate ``[lo, hi]``) has both ends scaled by m_l.

A (step, group) with a NaN/inf norm has no defined shares and is left out of the fit, with a
warning naming the group, the losses and the steps (:attr:`DerivedCoefficients.dropped`); a
targeted cell left with no step at all is refused, so no coefficient comes from a cell derive
could not use.

Optimizer-aware (Adam) shares are not linear in the weights (Adam divides by sqrt(v), which the
weights change), so they are refused unless ``assume_linear=True``; :func:`gradbalance.rebalance`
re-measures until the target is met.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np
import pandas as pd

from gradbalance.probe.reachability import check_targets_reachable
from gradbalance.report.table import ContributionTable
from gradbalance.functional.target_shares import Target, check_sums, target_bounds

Coefficient = Union[float, tuple[float, float]]

PRECOND_REFUSAL = ("optimizer-aware shares do not scale linearly with the loss weights (Adam divides each "
                   "gradient by sqrt(v), which the weights change); re-measure instead: gradbalance.rebalance(), "
                   "or `gradbalance derive --precond --verify`")


@dataclass(frozen=True)
class DerivedCoefficients:
    """Result of :func:`derive_coefficients`.

    ``residual`` is the root-mean-square log-share error over the targeted cells (0 when the
    target is met exactly); ``max_error`` the largest miss in percentage points. ``anchors`` maps
    each loss kept at its current weight because the target fixes only ratios to the losses
    whose scale follows it.
    """

    coefficients: dict[str, Coefficient]
    multipliers: dict[str, float]
    predicted: pd.DataFrame  # shares (percent) under the new coefficients, NaN = absent
    lower: pd.DataFrame  # targeted interval per cell (lower = upper for point targets), NaN = free
    upper: pd.DataFrame
    residual: float
    max_error: float
    untargeted: tuple[str, ...] = field(default=())  # losses held at their weight: nothing to fit
    anchors: dict[str, tuple[str, ...]] = field(default_factory=dict)
    dropped: dict[str, tuple[int, ...]] = field(default_factory=dict)  # group -> probed steps left out (non-finite)

    @property
    def feasible(self) -> bool:
        """Whether every target is met to 0.01 percentage points."""
        return self.max_error < 1e-2


def predicted_shares(norms: np.ndarray, reached: np.ndarray, multipliers: np.ndarray) -> np.ndarray:
    """``s̄_lg(m)`` in percent from per-step weighted norms (steps, losses, groups); NaN where no
    step of the cell has a defined share (absent, or the group's total is zero or not finite)."""
    values = np.where(reached, norms, 0.0)
    total = values.sum(axis=1)  # (steps, groups) at m = 1
    valid = np.isfinite(total) & (total > 0)
    scaled = multipliers[None, :, None] * np.where(valid[:, None, :], values, 0.0)
    scaled_total = scaled.sum(axis=1, keepdims=True)
    mask = reached & valid[:, None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.where(mask, 100.0 * scaled / np.where(scaled_total > 0, scaled_total, 1.0), 0.0)
        return shares.sum(axis=0) / np.where(mask.any(axis=0), mask.sum(axis=0), np.nan)


def _table_norms(table: ContributionTable) -> tuple[np.ndarray, np.ndarray]:
    """The table's per-step norms, or its mean shares as a single step (tables built by hand)."""
    if table.norms is not None:
        return table.norms, table.step_reached
    mean = table.mean.to_numpy(dtype=float)
    return np.nan_to_num(mean)[None], (~np.isnan(mean))[None]


def _nonfinite_cells(table: ContributionTable, norms: np.ndarray, reached: np.ndarray
                     ) -> tuple[np.ndarray, dict[str, tuple[int, ...]], dict[str, list[str]]]:
    """Cells no step can be fitted from, and the steps dropped per group, because of NaN/inf norms.

    A (step, group) with a non-finite norm has no defined shares (:func:`predicted_shares` leaves
    it out). Returns ``unusable`` (losses x groups: reached, but in no step with finite norms),
    ``{group: dropped steps}`` and ``{group: losses whose norm was non-finite}``."""
    bad = reached & ~np.isfinite(norms)  # (steps, losses, groups)
    bad_slices = bad.any(axis=1)  # (steps, groups)
    usable = (reached & ~bad_slices[:, None, :]).any(axis=0)
    unusable = reached.any(axis=0) & ~usable & bad_slices.any(axis=0)[None, :]
    steps = np.asarray(table.steps if table.norms is not None else range(len(norms)))
    groups, losses = list(table.mean.columns), list(table.mean.index)
    dropped = {groups[g]: tuple(int(t) for t in steps[bad_slices[:, g]]) for g in np.flatnonzero(bad_slices.any(axis=0))}
    culprits = {groups[g]: [losses[l] for l in np.flatnonzero(bad[:, :, g].any(axis=0))] for g in
                np.flatnonzero(bad_slices.any(axis=0))}
    return unusable, dropped, culprits


def _steps_text(steps: tuple[int, ...]) -> str:
    return ", ".join(str(t) for t in steps[:6]) + (f", ... ({len(steps)} steps)" if len(steps) > 6 else "")


def _anchor_components(losses: list[str], free: list[int], held: set[int], targeted: np.ndarray,
                       present: np.ndarray) -> dict[int, list[int]]:
    """Free losses whose common scale no held loss fixes, grouped; key = the first (it is held)."""
    parent = {i: i for i in free}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    anchored: set[int] = set()
    for g in np.nonzero(targeted.any(axis=0))[0]:
        members = [i for i in free if present[i, g]]
        for i in members[1:]:
            parent[root(i)] = root(members[0])
        if members and any(present[i, g] for i in held):
            anchored.add(root(members[0]))
    components: dict[int, list[int]] = {}
    for i in free:
        components.setdefault(root(i), []).append(i)
    roots_anchored = {root(r) for r in anchored}
    return {members[0]: members for r, members in components.items() if r not in roots_anchored}


def derive_coefficients(table: ContributionTable, target: Target, *,
                        fixed: Optional[Mapping[str, Coefficient]] = None,
                        current: Optional[Mapping[str, Coefficient]] = None,
                        assume_linear: bool = False) -> DerivedCoefficients:
    """Loss coefficients whose gradient shares best match ``target`` (see module docstring).

    Args:
        table: measured shares, their per-step norms and the mean weights they were measured with.
        target: ``"equal"``, ``{group: {loss: percent}}`` or ``{loss: (min%, max%)}``
            (:mod:`gradbalance.target_shares`); a group whose targets cannot sum to 100 % is refused, and
            so is a target on a pair with no path (every such pair named).
        fixed: coefficients to hold, ``{loss: value}`` (same form as ``current``).
        current: what each multiplier scales (default: the measured weights); give the configured
            ``(lo, hi)`` range of a loss whose weight was drawn per batch (QVRF's rate).
        assume_linear: accept optimizer-aware shares as if they scaled like raw ones (one
            iteration of :func:`gradbalance.rebalance`).
    """
    if table.column == "precond_norm" and not assume_linear:
        raise ValueError(PRECOND_REFUSAL)
    losses = list(table.mean.index)
    for loss, weight in table.weights.items():
        if not (math.isfinite(weight) and weight != 0):
            raise ValueError(f"loss {loss!r} was measured with weight {weight!r}; a nonzero weight "
                             "is needed to know how its share scales")
    current = {**{l: float(w) for l, w in table.weights.items()}, **dict(current or {})}
    fixed = dict(fixed or {})
    unknown = set(fixed) - set(losses)
    if unknown:
        raise ValueError(f"fixed names unknown loss(es) {sorted(unknown)}; the table has {losses}")
    check_targets_reachable(target, {(l, g): bool(table.reached.loc[l, g]) for l in losses for g in table.groups})
    norms, reached = _table_norms(table)
    unusable, dropped, culprits = _nonfinite_cells(table, norms, reached)
    present_frame = table.mean.notna() | pd.DataFrame(unusable, index=table.mean.index, columns=table.mean.columns)
    lower, upper = target_bounds(present_frame, target)
    check_sums(lower, upper, present_frame)
    refused = unusable & lower.notna().to_numpy()
    if refused.any():
        i, j = (int(k[0]) for k in np.nonzero(refused))
        loss, group = losses[i], table.mean.columns[j]
        raise ValueError(f"cannot derive the target of {loss!r} in {group!r}: every probed step of group {group!r} "
                         f"has a non-finite norm ({', '.join(culprits[group])}; steps {_steps_text(dropped[group])}), "
                         "so no step shows how the weights move its share; nothing was derived")
    for group, steps in dropped.items():
        warnings.warn(f"derive dropped {len(steps)} of {len(norms)} probed steps of group {group!r} "
                      f"(non-finite norm of {', '.join(culprits[group])} at steps {_steps_text(steps)}); "
                      "the coefficients are fitted to the other steps", stacklevel=2)
    with np.errstate(divide="ignore"):  # a lower bound of 0 % is log 0 = -inf: no lower bound
        log_lo, log_hi = np.log(lower.to_numpy()), np.log(upper.to_numpy())
    targeted = ~np.isnan(log_lo)
    zero = (lower > 0) & (table.mean <= 0)
    if zero.to_numpy().any():
        cells = [f"{zero.index[i]!r} in {zero.columns[j]!r}" for i, j in zip(*np.nonzero(zero.to_numpy()))]
        raise ValueError(f"{', '.join(cells)}: zero measured share; scaling the weight cannot change it")
    ratios = {l: _base(fixed[l]) / _base(current[l]) for l in fixed}
    if any(not r > 0 for r in ratios.values()):
        raise ValueError(f"fixed coefficients must have the sign of the current ones: {fixed} vs {current}")
    for l in fixed:  # a range scales as a whole: both ends by one multiplier
        scaled = scale_coefficient(current[l], ratios[l])
        if isinstance(scaled, tuple) != isinstance(fixed[l], (tuple, list)) or (isinstance(scaled, tuple) and (
                len(scaled) != len(fixed[l]) or any(abs(a - b) > 1e-6 * abs(b) for a, b in zip(scaled, fixed[l])))):
            raise ValueError(f"fixed {l}={fixed[l]} is not a multiple of its current value {current[l]}: shares "
                             "scale linearly only when every end of a range scales by the same factor")
    start = np.array([math.log(ratios[l]) if l in fixed else 0.0 for l in losses])
    free = [i for i, l in enumerate(losses) if l not in fixed and targeted[i].any()]
    held = {i for i in range(len(losses)) if i not in free}
    anchors = _anchor_components(losses, free, held, targeted, present_frame.to_numpy())
    free = [i for i in free if i not in anchors]

    def residuals(x: np.ndarray) -> np.ndarray:
        log_m = start.copy()
        log_m[free] = x
        log_s = np.log(predicted_shares(norms, reached, np.exp(log_m - log_m.max())))[targeted]
        return np.maximum(log_s - log_hi[targeted], 0) + np.minimum(log_s - log_lo[targeted], 0)

    log_m = start.copy()
    if free:
        from scipy.optimize import least_squares  # imported here: scipy is slow to import

        solution = least_squares(residuals, np.zeros(len(free)), xtol=1e-15, ftol=1e-15, gtol=1e-15)
        log_m[free] = solution.x
    multipliers = dict(zip(losses, np.exp(log_m).tolist()))
    predicted = pd.DataFrame(predicted_shares(norms, reached, np.exp(log_m)), index=table.mean.index,
                             columns=table.mean.columns)
    r = residuals(log_m[free]) if targeted.any() else np.zeros(0)
    miss = np.maximum(predicted - upper, 0) + np.maximum(lower - predicted, 0)
    return DerivedCoefficients(
        coefficients={l: _exact(fixed[l]) if l in fixed else scale_coefficient(current[l], multipliers[l])
                      for l in losses},
        multipliers=multipliers, predicted=predicted, lower=lower, upper=upper,
        residual=float(np.sqrt(np.mean(r ** 2))) if r.size else 0.0,
        max_error=float(np.nanmax(miss.to_numpy())) if targeted.any() else 0.0,
        untargeted=tuple(l for i, l in enumerate(losses) if l not in fixed and not targeted[i].any()),
        anchors={losses[a]: tuple(losses[i] for i in members) for a, members in anchors.items()},
        dropped=dropped,
    )


def derive_from_norms(norms: Union[pd.DataFrame, Sequence[pd.DataFrame]], weights: Mapping[str, float],
                      target: Target, *, fixed: Optional[Mapping[str, Coefficient]] = None,
                      current: Optional[Mapping[str, Coefficient]] = None) -> DerivedCoefficients:
    """New weights from weighted norms measured at ``weights`` (the solver of an online balancer).

    ``norms``: one frame (losses x groups) of weighted norms ``||w_l dL_l/dθ_g||`` (NaN: the loss
    does not reach the group), e.g. an EMA, or a sequence of such frames, one per step. ``weights``
    are the weights they were measured with. ``target``, ``fixed``, ``current``: as in
    :func:`derive_coefficients`; ``result.coefficients`` are the new weights. Norms scale linearly with
    the weights, so a rate norm of 1 against an l2 norm of 3 needs 3x the rate weight for 50/50:

    >>> norms = pd.DataFrame({"main": [1.0, 3.0]}, index=["rate", "l2"])
    >>> result = derive_from_norms(norms, {"rate": 1.0, "l2": 1.0}, {"main": {"rate": 50, "l2": 50}}, fixed={"l2": 1.0})
    >>> {loss: round(c, 6) for loss, c in result.coefficients.items()}, result.predicted["main"].round(6).tolist()
    ({'rate': 3.0, 'l2': 1.0}, [50.0, 50.0])
    """
    frames = [norms] if isinstance(norms, pd.DataFrame) else list(norms)
    if not frames:
        raise ValueError("no norms given")
    missing = set(frames[0].index) - set(weights)
    if missing:
        raise ValueError(f"no weight given for loss(es) {sorted(missing)}")
    rows = [dict(step=t, loss=loss, group=group, weight=float(weights[loss]), norm=float(frame.loc[loss, group]),
                 reached=not np.isnan(frame.loc[loss, group]))
            for t, frame in enumerate(frames) for loss in frame.index for group in frame.columns]
    table = ContributionTable.from_records(pd.DataFrame(rows), loss_order=list(frames[0].index),
                                           group_order=list(frames[0].columns))
    return derive_coefficients(table, target, fixed=fixed, current=current)


def _base(value: Coefficient) -> float:
    """The scalar a coefficient scales by: itself, or the lower end of a range."""
    return float(value[0]) if isinstance(value, (tuple, list)) else float(value)


def _exact(value: Coefficient) -> Coefficient:
    """A held coefficient as given (not rebuilt as current * ratio, which rounds)."""
    return tuple(float(v) for v in value) if isinstance(value, (tuple, list)) else float(value)


def scale_coefficient(value: Coefficient, multiplier: float) -> Coefficient:
    if isinstance(value, (tuple, list)):
        return tuple(float(v) * multiplier for v in value)
    return float(value) * multiplier
