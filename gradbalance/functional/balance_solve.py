"""The Balancer's solver math, stateless: solve for coefficients, the feedback correction, limits.

Each function takes what it needs and returns new values; the :class:`gradbalance.Balancer` and its
update laws (:mod:`gradbalance.update_laws`) keep all state. The one call into derive is
:func:`gradbalance.derive.derive_coefficients` (log-share least squares, ST-LIC Sec. III).

* :func:`solve_coefficients`: coefficients meeting the targets from per-unit-coefficient norms u_lg
  (the feed-forward: shares predicted as ``|c_l| u_lg / Σ_k |c_k| u_kg``, Table I);
* :func:`mean_shares`, :func:`share_error`: the predicted mean shares and the model's error against
  the shares measured under the coefficients in effect (the feedback);
* :func:`limit_change`: the per-update factor limit ``max_change`` and the bounds;
* :func:`unreachable_pairs`: targeted (loss, group) pairs with no gradient path.
"""
from __future__ import annotations

import warnings

from collections.abc import Mapping, Sequence
from typing import Optional, Union

import numpy as np
import pandas as pd

from gradbalance.balancer.spec import Targets
from gradbalance.functional.derive import derive_coefficients
from gradbalance.report.table import ContributionTable


def solve_coefficients(norms: Union[pd.DataFrame, Sequence[pd.DataFrame]], weights: Mapping[str, float],
                       targets: Targets, bounds: Mapping[str, tuple[float, float]],
                       fixed: Mapping[str, float]) -> tuple[dict[str, float], pd.DataFrame]:
    """New coefficients for the targets, and the shares (%) predicted under them.

    ``norms``: per-unit-coefficient norms u_lg (losses x groups, NaN = unmeasured or absent), or a
    sequence of such frames (then the *mean* of the per-frame shares meets the targets, as derive
    fits Table I). Derive (:func:`gradbalance.derive_coefficients`) runs on the weighted norms
    |c_l| u_lg at ``weights``. Losses never measured, and targeted cells with no gradient, are held
    (:func:`reachable_targets`). Bounds are enforced as an active set: a coefficient the solution
    puts outside its bounds is held at the bound and the rest re-solved.
    """
    frames = [norms] if isinstance(norms, pd.DataFrame) else list(norms)
    losses, groups = list(frames[0].index), list(frames[0].columns)
    cube = np.stack([f.to_numpy(dtype=float) for f in frames])
    keep = [i for i in range(len(losses)) if np.isfinite(cube[:, i]).any()]
    measured = [losses[i] for i in keep]
    cube = cube[:, keep] * np.abs([weights[l] for l in measured])[None, :, None]
    table = _table(cube, measured, groups, weights)
    shares = table.mean
    goal = reachable_targets(targets, shares)
    if not measured or goal is None:
        return dict(weights), shares
    held = {l: v for l, v in fixed.items() if l in measured}
    for _ in range(len(measured) + 1):
        result = derive_coefficients(table, goal, fixed=held or None)
        solved = {**weights, **{l: float(v) for l, v in result.coefficients.items()}}
        outside = {l: float(np.clip(solved[l], *bounds[l])) for l in bounds
                   if l in measured and l not in held and not bounds[l][0] <= solved[l] <= bounds[l][1]}
        if not outside:
            break
        held.update(outside)
    return solved, result.predicted


def _table(cube: np.ndarray, losses: list[str], groups: list[str], weights: Mapping[str, float]) -> ContributionTable:
    """The ContributionTable of weighted norms ``cube`` (steps, losses, groups; NaN = absent), built
    directly (the balancer calls the solve every update; records frames would cost more than it)."""
    reached = np.isfinite(cube)
    with np.errstate(invalid="ignore", divide="ignore"):
        total = np.where(reached, cube, 0.0).sum(axis=1, keepdims=True)
        step_shares = np.where(reached, 100.0 * cube / total, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells: absent
        mean = np.nanmean(step_shares, axis=0)
        std = np.nanstd(step_shares, axis=0)
    frame = lambda values: pd.DataFrame(values, index=pd.Index(losses, name="loss"),  # noqa: E731
                                        columns=pd.Index(groups, name="group"))
    return ContributionTable(mean=frame(mean), std=frame(std), weights=pd.Series({l: float(weights[l]) for l in losses}),
                             steps=tuple(range(len(cube))), reached=frame(reached.any(axis=0)),
                             nonfinite=frame(np.zeros(mean.shape, dtype=int)), norms=np.nan_to_num(cube),
                             step_reached=reached)


def mean_shares(frames: Sequence[pd.DataFrame], weights: Mapping[str, float]) -> pd.DataFrame:
    """Mean over ``frames`` of the shares (%) ``|c_l| u_lg / Σ_k |c_k| u_kg`` (NaN cells left out)."""
    losses = list(frames[0].index)
    cube = np.stack([f.to_numpy(dtype=float) for f in frames]) * np.abs([weights[l] for l in losses])[None, :, None]
    return _table(cube, losses, list(frames[0].columns), weights).mean


def share_error(expected: np.ndarray, measured: np.ndarray, floor: float = 0.05) -> np.ndarray:
    """Per-cell log-norm correction that moves the ``expected`` shares (%) onto the ``measured`` ones,
    linearised: ``(s_measured - s_expected) / (s (1 - s))`` (s as a fraction, ∂s/∂log u = s (1 - s),
    held at least ``floor``); 0 where either is NaN. Linear in the measured share, so its integral
    matches the *mean* share (a log-share error would match the median)."""
    s = np.clip(np.nan_to_num(expected) / 100.0, 0.0, 1.0)
    error = (measured - expected) / 100.0 / np.maximum(s * (1 - s), floor)
    return np.where(np.isfinite(error), error, 0.0)


def limit_change(current: Mapping[str, float], proposed: Mapping[str, float], max_change: float,
                 bounds: Mapping[str, tuple[float, float]]) -> dict[str, float]:
    """``proposed`` moved at most the factor ``max_change`` from ``current``, then clipped to ``bounds``."""
    out = {}
    for loss, value in current.items():
        ratio = float(np.clip(proposed[loss] / value, 1 / max_change, max_change))
        low, high = bounds.get(loss, (-np.inf, np.inf))
        out[loss] = float(np.clip(value * ratio, low, high))
    return out


def reachable_targets(targets: Targets, shares: pd.DataFrame) -> Optional[Targets]:
    """The part of ``targets`` the solver can act on now (measured, nonzero cells); None if nothing.

    A targeted loss with no gradient in a group now (e.g. the adversarial loss in its warm-up, factor 0)
    is left out there; if every loss that does reach the group is targeted, their targets are scaled
    to sum to 100 % in the same ratios (derive refuses targets that cannot sum to 100 %).
    """
    if isinstance(targets, str):
        return targets
    if all(isinstance(v, Mapping) for v in targets.values()):
        goal = {}
        for group, cells in targets.items():
            if group not in shares.columns:
                continue
            reaching = shares.index[shares[group] > 0]
            kept = {l: p for l, p in cells.items() if p and l in reaching}
            dropped = any(p and l not in kept for l, p in cells.items())
            if kept and dropped and set(reaching) <= set(kept):
                total = sum(kept.values())
                kept = {l: 100.0 * p / total for l, p in kept.items()}
            if kept:
                goal[group] = kept
    else:
        goal = {l: b for l, b in targets.items() if l in shares.index}
    return goal or None


def unreachable_pairs(targets: Targets, losses: Sequence[str], groups: Sequence[str],
                      reached: np.ndarray) -> list[tuple[str, str]]:
    """Targeted (loss, group) pairs, with a nonzero share asked, where ``reached`` (losses x groups,
    bool) says the loss has no gradient path to the group. Interval and ``"equal"`` targets apply
    only where a loss reaches, so only ``{group: {loss: percent}}`` cells can be unreachable."""
    if isinstance(targets, str) or not all(isinstance(v, Mapping) for v in targets.values()):
        return []
    return [(loss, group) for group, cells in targets.items() for loss, percent in cells.items()
            if percent and loss in losses and group in groups
            and not reached[list(losses).index(loss), list(groups).index(group)]]
