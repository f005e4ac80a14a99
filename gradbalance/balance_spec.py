"""What a :class:`gradbalance.Balancer` is asked to hold, validated when it is built: target shares
(read per cell), starting coefficients, fixed coefficients and coefficient bounds.

Targets take three forms, as for :func:`gradbalance.derive_coefficients`: ``"equal"`` (every present loss gets
``100 / n`` percent of its group), ``{group: {loss: percent}}`` (a None cell is untargeted; 0 marks a
loss that cannot reach the group) and ``{loss: (min%, max%)}`` (an interval in every group).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Union

import numpy as np

Targets = Union[str, Mapping[str, Mapping[str, float]], Mapping[str, Sequence[float]]]


def check_targets(targets: Targets, losses: Sequence[str], groups: Sequence[str]) -> Targets:
    """``targets`` as plain dicts of floats, or a one-line error naming the bad entry."""
    if isinstance(targets, str):
        if targets != "equal":
            raise ValueError(f"unknown target {targets!r}: use 'equal', {{group: {{loss: percent}}}} or "
                             "{loss: [min%, max%]}")
        return targets
    if not isinstance(targets, Mapping) or not targets:
        raise ValueError(f"targets must be 'equal' or a non-empty mapping, got {targets!r}")
    if all(isinstance(cells, Mapping) for cells in targets.values()):
        out = {}
        for group, cells in targets.items():
            if group not in groups:
                raise ValueError(f"targets name group {group!r}; the groups are {list(groups)}")
            out[group] = {_loss(loss, losses): _percent(value, f"{loss}/{group}") for loss, value in cells.items()}
        if not any(v for cells in out.values() for v in cells.values()):
            raise ValueError("the targets set no share: every cell is null or 0; fill in the percentages")
        return out
    out = {}
    for loss, pair in targets.items():
        if isinstance(pair, (str, Mapping)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise ValueError(f"target interval of {loss!r} must be [min%, max%], got {pair!r}")
        low, high = (_percent(v, loss) for v in pair)
        if low is None or high is None or low > high or high == 0:
            raise ValueError(f"target interval of {loss!r} must satisfy 0 <= min <= max <= 100, max > 0; got {pair!r}")
        out[_loss(loss, losses)] = (low, high)
    return out


def target_interval(targets: Targets, loss: str, group: str, present: int) -> tuple[float, float]:
    """Targeted (low, high) percent of ``loss`` in ``group`` where ``present`` losses reach it; NaN if untargeted."""
    if isinstance(targets, str):
        return (100.0 / present,) * 2 if present else (math.nan, math.nan)
    first = next(iter(targets.values()))
    if isinstance(first, Mapping):
        value = targets.get(group, {}).get(loss)
        return (math.nan, math.nan) if value is None else (float(value), float(value))
    low, high = targets.get(loss, (math.nan, math.nan))
    return float(low), float(high)


def check_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Finite nonzero float coefficients (a clear error otherwise)."""
    if not weights:
        raise ValueError("weights: give the initial coefficient of every loss")
    out = {}
    for loss, value in weights.items():
        if isinstance(value, (tuple, list)) or not np.isfinite(float(value)) or float(value) == 0:
            raise ValueError(f"weight of {loss!r} must be a finite nonzero number (a zero-weight loss cannot "
                             f"be balanced: leave it out), got {value!r}")
        out[str(loss)] = float(value)
    return out


def check_fixed(fixed, weights: Mapping[str, float], anchor: str) -> dict[str, float]:
    """``{loss: held value}`` from a mapping or names (held at ``weights``); ``{anchor: weight}`` when empty."""
    if fixed is None or (not isinstance(fixed, Mapping) and not list(fixed)) or (isinstance(fixed, Mapping) and not fixed):
        return {anchor: weights[anchor]}
    held = dict(fixed) if isinstance(fixed, Mapping) else {l: weights.get(l) for l in fixed}
    unknown = sorted(set(held) - set(weights))
    if unknown:
        raise ValueError(f"fixed names unknown loss(es) {unknown}; the balancer has {list(weights)}")
    return check_weights(held)


def check_bounds(bounds, weights: Mapping[str, float]) -> dict[str, tuple[float, float]]:
    """``{loss: (lo, hi)}`` coefficient limits that contain the initial ``weights``."""
    out = {}
    for loss, pair in (bounds or {}).items():
        if loss not in weights:
            raise ValueError(f"bounds name unknown loss {loss!r}; the balancer has {list(weights)}")
        if isinstance(pair, (str, Mapping)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise ValueError(f"bounds of {loss!r} must be (lo, hi), got {pair!r}")
        low, high = map(float, pair)
        if not low <= weights[loss] <= high:
            raise ValueError(f"initial weight of {loss!r} ({weights[loss]:g}) is outside its bounds [{low:g}, {high:g}]")
        out[loss] = (low, high)
    return out


def _loss(name: str, losses: Sequence[str]) -> str:
    if name not in losses:
        raise ValueError(f"targets name loss {name!r}; the losses are {list(losses)}")
    return name


def _percent(value, where: str):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= float(value) <= 100 \
            or math.isnan(float(value)):
        raise ValueError(f"target share of {where} must be a percentage in [0, 100] or null, got {value!r}")
    return float(value)
