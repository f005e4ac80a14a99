"""Comparing a measured ContributionTable with published shares (a paper's Table I)."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from gradbalance.report.reference import ReferenceShares, compare, comparison_markdown
from gradbalance.report.table import ContributionTable


def _table() -> ContributionTable:
    rows = []
    for step, norms in enumerate([{"a": 1.0, "b": 3.0, "c": 0.0}, {"a": 3.0, "b": 1.0, "c": 0.0}]):
        for loss, value in norms.items():
            rows.append(dict(step=step, loss=loss, group="g", weight=1.0, norm=value))
        rows.append(dict(step=step, loss="a", group="h", weight=1.0, norm=2.0))
        rows.append(dict(step=step, loss="b", group="h", weight=1.0, norm=float("nan")))
    return ContributionTable.from_records(pd.DataFrame(rows), loss_order=("a", "b", "c"))


def test_compare_gives_measured_reference_and_difference():
    ref = ReferenceShares("paper", {"g": {"a": 40.0, "b": None, "c": 5.0}, "h": {"a": 100.0}},
                          combined={"a+b": ("a", "b")})
    frame = compare(_table(), ref)
    assert frame.loc["a", ("g", "measured")] == pytest.approx(50.0)  # mean of 25 % and 75 %
    assert frame.loc["a", ("g", "diff")] == pytest.approx(10.0)
    assert math.isnan(frame.loc["b", ("g", "reference")]) and math.isnan(frame.loc["b", ("g", "diff")])
    assert frame.loc["c", ("g", "diff")] == pytest.approx(-5.0)
    assert frame.loc["a+b", ("g", "measured")] == pytest.approx(100.0)
    assert math.isnan(frame.loc["a+b", ("g", "reference")])  # b is not published
    assert frame.loc["a", ("h", "diff")] == pytest.approx(0.0)
    text = comparison_markdown(_table(), ref)
    assert "| a | 50.0 | 40.0 | +10.0 |" in text and "g paper" in text


def test_reference_round_trips_and_rejects_bad_cells():
    ref = ReferenceShares("paper", {"g": {"a": 40.0}}, combined={"s": ("a",)})
    assert ReferenceShares.from_dict(ref.to_dict()) == ReferenceShares("paper", {"g": {"a": 40.0}}, {"s": ["a"]})
    for bad in (120.0, -1.0, "fifty", float("nan"), True):
        with pytest.raises(ValueError, match="cell g/a"):
            ReferenceShares("paper", {"g": {"a": bad}})
