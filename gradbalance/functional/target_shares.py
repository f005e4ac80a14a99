"""Target shares for :func:`gradbalance.derive_coefficients`: parsing, checking, reachability.

A target is ``"equal"``, ``{group: {loss: percent}}`` (e.g. the paper's Table I; a ``None`` cell
is not targeted, a ``0`` cell must be one the loss cannot reach) or ``{loss: (min%, max%)}``
applied in every group the loss reaches. Each becomes a per-cell interval ``[lower, upper]``
(percent; NaN = free). Shares of the losses reaching a group sum to 100 %, so a group whose
targets cannot sum to 100 % is refused (:func:`check_sums`) instead of being "solved" by pushing
some weights to zero.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Union

import numpy as np
import pandas as pd

Target = Union[str, Mapping[str, Mapping[str, float]], Mapping[str, Sequence[float]]]

#: targets may miss 100 % by this much (percentage points: rounded published tables)
SUM_TOLERANCE = 0.5


def _number(value: object, what: str) -> float:
    """``float(value)`` or an error naming the cell."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return number


def target_bounds(present: pd.DataFrame, target: Target) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-cell (lower, upper) percent targets; ``present`` (bool, losses x groups) marks the cells
    with a measured share."""
    lower = pd.DataFrame(np.nan, index=present.index, columns=present.columns)
    upper = lower.copy()
    if isinstance(target, str):
        if target != "equal":
            raise ValueError(f"unknown target {target!r}: use 'equal', {{group: {{loss: percent}}}} or "
                             "{loss: [min%, max%]}")
        equal = 100.0 / present.sum(axis=0).replace(0, np.nan)
        lower = present.mul(equal, axis=1).where(present)
        return lower, lower.copy()
    if not isinstance(target, Mapping) or not target:
        raise ValueError(f"target must be 'equal' or a non-empty mapping, got {target!r}")
    if all(isinstance(v, Mapping) for v in target.values()):
        for group, shares in target.items():
            if group not in lower.columns:
                raise ValueError(f"target names group {group!r}; the table has {list(lower.columns)}")
            for loss, percent in shares.items():
                if percent is None:  # a placeholder (YAML null): this cell is not targeted
                    continue
                what = f"target share of {loss!r} in {group!r}"
                value = _number(percent, what)
                if loss not in lower.index:
                    raise ValueError(f"target names loss {loss!r}; the table has {list(lower.index)}")
                if value == 0 and not present.loc[loss, group]:
                    continue  # "0" for a loss that cannot reach the group: consistent, nothing to fit
                if not present.loc[loss, group]:
                    raise ValueError(f"loss {loss!r} does not reach group {group!r} (with a finite, nonzero "
                                     "gradient in any step): its share there cannot be targeted")
                if not 0 < value <= 100:
                    raise ValueError(f"{what} must be in (0, 100], got {percent}")
                lower.loc[loss, group] = upper.loc[loss, group] = value
        if lower.isna().all().all():
            raise ValueError("the target sets no share: every cell is null (a placeholder) or absent; "
                             "fill in the percentages")
        return lower, upper
    for loss, bounds in target.items():
        if isinstance(bounds, (str, Mapping)) or not isinstance(bounds, Sequence) or len(bounds) != 2:
            raise ValueError(f"bounds target for {loss!r} must be [min%, max%], got {bounds!r}")
        lo, hi = (_number(b, f"bound of {loss!r}") for b in bounds)
        if not 0 <= lo <= hi <= 100 or hi == 0:
            raise ValueError(f"bounds of {loss!r} must satisfy 0 <= min <= max <= 100, max > 0; got {bounds!r}")
        if loss not in lower.index:
            raise ValueError(f"target names loss {loss!r}; the table has {list(lower.index)}")
        lower.loc[loss] = lower.loc[loss].where(~present.loc[loss], lo)
        upper.loc[loss] = upper.loc[loss].where(~present.loc[loss], hi)
    return lower, upper


def check_sums(lower: pd.DataFrame, upper: pd.DataFrame, present: pd.DataFrame) -> None:
    """Refuse a group whose targets cannot sum to 100 % (one line naming the group and the sums)."""
    for group in lower.columns:
        targeted = lower[group].notna()
        if not targeted.any():
            continue
        losses = list(present.index[present[group]])
        free = [l for l in losses if not targeted[l]]
        lo, hi = float(lower[group].sum()), float(upper[group].sum())
        span = f"{lo:g} %" if lo == hi else f"{lo:g}..{hi:g} %"
        if lo > 100 + SUM_TOLERANCE:
            raise ValueError(f"the targets of group {group!r} sum to {span}, more than 100 %")
        if not free and hi < 100 - SUM_TOLERANCE:
            raise ValueError(f"the targets of group {group!r} sum to {span}, but every loss reaching it "
                             f"({', '.join(losses)}) is targeted, so their shares sum to 100 %")

