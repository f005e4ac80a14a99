"""What a :class:`gradbalance.Balancer` is asked to hold and how, validated when it is built.

:class:`BalancerSpec` is the one validated object of the Balancer's settings (targets, probing,
update law, limits); a training config's ``balancer:`` section is its keywords, one to one, as
audiocraft builds its balancer from a config block. The check functions below validate what needs
the model's losses and groups: target shares (read per cell), starting, fixed and bounded coefficients.

Targets take three forms, as for :func:`gradbalance.derive_coefficients`: ``"equal"`` (every present loss gets
``100 / n`` percent of its group), ``{group: {loss: percent}}`` (a None cell is untargeted; 0 marks a
loss that cannot reach the group) and ``{loss: (min%, max%)}`` (an interval in every group).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import pandas as pd

Targets = Union[str, Mapping[str, Mapping[str, float]], Mapping[str, Sequence[float]]]
#: the update laws of :mod:`gradbalance.update_laws`
LAW_NAMES = ("controller", "resolve")


@dataclass(frozen=True)
class BalancerSpec:
    """The Balancer's settings, validated on construction (one line naming the bad field).

    Args:
        targets: ``"equal"``, ``{group: {loss: percent}}`` (None: untargeted; 0: cannot reach) or
            ``{loss: (min%, max%)}``. A target is the **mean share over a window**: the mean, over the
            steps of ``window`` consecutive updates (``window * every`` steps), of the per-step share
            ``|c_l f_l| ||∂L_l/∂θ_g|| / Σ_k |c_k f_k| ||∂L_k/∂θ_g||`` (Table I), not one step's share.
            A group whose targets cannot sum to 100 % is refused.
        every: probe and update every ``every`` steps. ``ema``: β of the norm filter (0 = the latest
            probe only). ``window``: updates per target window (the controller's noise sample).
        law: ``"controller"`` (feed-forward solve + integral feedback on measured shares) or
            ``"resolve"`` (issue 10's clipped re-solve at an EMA); see :mod:`gradbalance.update_laws`.
        gain: the controller's integral gain k per update, in [0, 1] (0: feed-forward only).
        max_change: the largest factor by which one update moves a coefficient (> 1).
        fixed: coefficients to hold, ``{loss: value}`` or loss names (held at their initial value);
            empty: the first loss is held (shares do not change when all coefficients scale together).
        bounds: ``{loss: (lo, hi)}`` limits of the coefficients.
        precond: balance the shares of the Adam update (needs the optimizer).
        tolerance: a solver miss above this many percentage points is logged.
        loss_values: the controller also reads every step's loss values |f_l L_l| (free: no extra
            backward), as a feed-forward between probes (:mod:`gradbalance.update_laws`).
    """

    targets: Targets
    every: int = 10
    ema: float = 0.9
    window: int = 10
    law: str = "controller"
    gain: float = 0.1
    max_change: float = 2.0
    fixed: Union[Mapping[str, float], Sequence[str], None] = None
    bounds: Optional[Mapping[str, Sequence[float]]] = None
    precond: bool = False
    tolerance: float = 0.5
    loss_values: bool = True

    def __post_init__(self) -> None:
        for name in ("every", "window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        _in_range("ema", self.ema, 0 <= _real(self.ema, "ema") < 1, "in [0, 1)")
        _in_range("gain", self.gain, 0 <= _real(self.gain, "gain") <= 1, "in [0, 1]")
        _in_range("max_change", self.max_change, _real(self.max_change, "max_change") > 1, "> 1 (a factor per update)")
        _in_range("tolerance", self.tolerance, _real(self.tolerance, "tolerance") >= 0, ">= 0")
        if self.law not in LAW_NAMES:
            raise ValueError(f"law must be one of {list(LAW_NAMES)}, got {self.law!r}")
        for name in ("precond", "loss_values"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        targets = check_targets(self.targets)
        check_target_sums(targets)  # the losses are not known yet: only sums above 100 % are refused here
        object.__setattr__(self, "targets", targets)
        if self.bounds is not None and not isinstance(self.bounds, Mapping):
            raise ValueError(f"bounds must be a mapping {{loss: [lo, hi]}}, got {self.bounds!r}")
        for loss, pair in (self.bounds or {}).items():
            _bound_pair(loss, pair)
        if self.fixed is not None and isinstance(self.fixed, str):
            raise ValueError(f"fixed must be a list of loss names or {{loss: value}}, got {self.fixed!r}")

    def replace(self, **changes) -> "BalancerSpec":
        return dataclasses.replace(self, **changes)

    def check(self, losses: Sequence[str], groups: Sequence[str]) -> None:
        """The names in the targets, ``fixed`` and ``bounds`` are those of ``losses`` and ``groups``,
        and no group's targets fall short of 100 % where every one of ``losses`` is targeted."""
        check_targets(self.targets, losses, groups)
        check_target_sums(self.targets, losses)
        names = list(self.fixed or ()) + list(self.bounds or ())
        unknown = sorted({n for n in names if n not in losses})
        if unknown:
            raise ValueError(f"fixed/bounds name unknown loss {unknown[0]!r}; the losses are {list(losses)}")


def check_targets(targets: Targets, losses: Optional[Sequence[str]] = None,
                  groups: Optional[Sequence[str]] = None) -> Targets:
    """``targets`` as plain dicts of floats, or a one-line error naming the bad entry (names are
    checked against ``losses`` and ``groups`` when given)."""
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
            if groups is not None and group not in groups:
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
        low, high = _bound_pair(loss, pair)
        if not low <= weights[loss] <= high:
            raise ValueError(f"initial weight of {loss!r} ({weights[loss]:g}) is outside its bounds [{low:g}, {high:g}]")
        out[loss] = (low, high)
    return out


def check_target_sums(targets: Targets, losses: Optional[Iterable[str]] = None) -> None:
    """Refuse a group whose targets cannot sum to 100 % (:func:`gradbalance.target_shares.check_sums`,
    the rule derive applies), assuming each of ``losses`` reaches each targeted group unless its
    target there is 0 (cannot reach). Without ``losses``, an untargeted loss is assumed to exist
    besides those the targets name (only sums above 100 % are refused)."""
    from gradbalance.functional.target_shares import check_sums, target_bounds

    if isinstance(targets, str):
        return
    others = list(losses) if losses is not None else ["\0 untargeted"]
    losses = list(dict.fromkeys([*others, *_target_losses(targets)]))
    if all(isinstance(cells, Mapping) for cells in targets.values()):
        groups = list(targets)
        present = pd.DataFrame(True, index=losses, columns=groups)
        for group, cells in targets.items():
            for loss, percent in cells.items():
                if percent == 0:
                    present.loc[loss, group] = False
    else:
        present = pd.DataFrame(True, index=losses, columns=["every group"])
    check_sums(*target_bounds(present, targets), present)


def _target_losses(targets: Targets) -> list[str]:
    if isinstance(targets, str):
        return []
    if all(isinstance(cells, Mapping) for cells in targets.values()):
        return list(dict.fromkeys(loss for cells in targets.values() for loss in cells))
    return list(targets)


def _real(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _in_range(name: str, value, ok: bool, rule: str) -> None:
    if not ok:
        raise ValueError(f"{name} must be {rule}, got {value!r}")


def _bound_pair(loss: str, pair) -> tuple[float, float]:
    if isinstance(pair, (str, Mapping)) or not isinstance(pair, Sequence) or len(pair) != 2 \
            or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in pair) \
            or not pair[0] <= pair[1]:
        raise ValueError(f"bounds of {loss!r} must be [lo, hi] with finite lo <= hi, got {pair!r}")
    return float(pair[0]), float(pair[1])


def _loss(name: str, losses: Optional[Sequence[str]]) -> str:
    if losses is not None and name not in losses:
        raise ValueError(f"targets name loss {name!r}; the losses are {list(losses)}")
    return name


def _percent(value, where: str):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= float(value) <= 100 \
            or math.isnan(float(value)):
        raise ValueError(f"target share of {where} must be a percentage in [0, 100] or null, got {value!r}")
    return float(value)
