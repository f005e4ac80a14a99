"""Published shares to compare a measured ContributionTable with (e.g. a paper's Table I).

    diff_ij = measured_ij - reference_ij      (percentage points)

A reference is ``{group: {loss: percent or None}}`` (None / absent = not published) with a name,
and optional *combined* rows: ``{"perceptual": ("lpips", "wasserstein", "adversarial")}`` adds the
sum of those losses' shares in each group, for targets where only the sum is reachable (one
weight per loss serves every group, so individual cells of one group may be out of reach).
A probe target may expose one as ``target.reference``; the CLI then prints the comparison and
stores the reference in the run's metadata.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class ReferenceShares:
    """Named reference percentages per group and loss, plus summed rows."""

    name: str
    shares: Mapping[str, Mapping[str, Optional[float]]]
    combined: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for group, cells in self.shares.items():
            if not isinstance(cells, Mapping):
                raise ValueError(f"reference {self.name!r}: group {group!r} must map losses to percents")
            for loss, value in cells.items():
                if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                          or not np.isfinite(value) or not 0 <= value <= 100):
                    raise ValueError(f"reference {self.name!r}: cell {group}/{loss} must be a percent in "
                                     f"[0, 100] or null, got {value!r}")

    def to_dict(self) -> dict:
        """Plain JSON-able form (stored in a run's metadata)."""
        return {"name": self.name, "shares": {g: dict(c) for g, c in self.shares.items()},
                "combined": {k: list(v) for k, v in self.combined.items()}}

    @classmethod
    def from_dict(cls, data: Mapping) -> "ReferenceShares":
        return cls(str(data["name"]), data["shares"], data.get("combined") or {})

    def value(self, loss: str, group: str) -> float:
        """Reference percent of ``loss`` (or a combined row) in ``group``; NaN when not published."""
        cells = self.shares.get(group, {})
        if loss in self.combined:
            parts = [cells.get(name) for name in self.combined[loss]]
            return float("nan") if any(p is None for p in parts) else float(sum(parts))
        value = cells.get(loss)
        return float("nan") if value is None else float(value)


def compare(table, reference: ReferenceShares) -> pd.DataFrame:
    """Rows = the table's losses then the combined rows; columns = (group, measured|reference|diff)."""
    measured = table.mean.copy()
    for name, parts in reference.combined.items():
        present = [p for p in parts if p in measured.index]
        measured.loc[name] = measured.loc[present].sum(min_count=1) if present else np.nan
    columns = {}
    for group in measured.columns:
        ref = pd.Series([reference.value(loss, group) for loss in measured.index], index=measured.index)
        columns[(group, "measured")] = measured[group]
        columns[(group, "reference")] = ref
        columns[(group, "diff")] = measured[group] - ref
    frame = pd.DataFrame(columns)
    frame.index.name = "loss"
    return frame


def comparison_markdown(table, reference: ReferenceShares, decimals: int = 1) -> str:
    """Markdown: per group, measured | reference | difference (pp); ``-`` where either is missing."""
    frame = compare(table, reference)
    groups = list(dict.fromkeys(g for g, _ in frame.columns))

    def fmt(value: float, signed: bool = False) -> str:
        if np.isnan(value):
            return "-"
        value = round(float(value), decimals) + 0.0  # no "-0.0"
        return f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"

    header = "| loss | " + " | ".join(f"{g} measured | {g} {reference.name} | {g} diff (pp)" for g in groups) + " |"
    lines = [header, "|---|" + "---:|" * (3 * len(groups))]
    for loss in frame.index:
        cells = []
        for group in groups:
            cells += [fmt(frame.loc[loss, (group, "measured")]), fmt(frame.loc[loss, (group, "reference")]),
                      fmt(frame.loc[loss, (group, "diff")], signed=True)]
        lines.append(f"| {loss} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
