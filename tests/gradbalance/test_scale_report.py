"""describe_scale: which range coefficients (operating points) derived multipliers keep or move, and why."""
from __future__ import annotations

import pytest

from gradbalance.report.scale_report import describe_scale


def test_a_range_with_multiplier_one_is_kept_and_scalars_are_not_operating_points():
    report = describe_scale({"rate": [0.135, 1.7], "l2": 50.0}, {"rate": 1.0, "l2": 1.05})
    assert report.kept == {"rate": (0.135, 1.7)} and not report.moved and report.note() is None
    assert report.header() == "Operating point kept: rate [0.135, 1.7]."


def test_a_kept_range_whose_trade_off_moved_is_not_called_kept():
    # the issue-18 case: rate held, the distortion weight fell to 0.071 of the base's: another bitrate
    report = describe_scale({"rate": (0.135, 1.7)}, {"rate": 1.0, "l2": 0.0713, "l1": 1.02},
                            fixed={"rate": (0.135, 1.7)})
    assert report.tradeoff == {"rate": {"l2": pytest.approx(0.0713), "l1": pytest.approx(1.02)}}
    assert report.header().startswith("Range kept: rate [0.135, 1.7] (held); but the weights it trades against")
    assert "l2 x0.0713" in report.header() and "Operating point kept" not in report.header()
    assert "matched bpp" in report.note()
    # the ratio is what counts: every weight scaled with the range keeps the trade-off
    same = describe_scale({"rate": (0.135, 1.7)}, {"rate": 2.0, "l2": 2.0}, fixed={"rate": (0.27, 3.4)})
    assert not same.tradeoff and same.header().startswith("Operating point kept")


def test_a_held_coefficient_that_moves_the_range_is_named_with_the_way_to_keep_it():
    report = describe_scale({"rate": (0.135, 1.70), "adversarial": 4.1}, {"rate": 3.0096, "adversarial": 1.0},
                            fixed={"adversarial": 4.1})
    old, new, factor = report.moved["rate"]
    assert new == pytest.approx((0.135 * 3.0096, 1.70 * 3.0096)) and factor == 3.0096
    assert report.header() == ("Operating point moved: rate [0.135, 1.7] -> [0.4063, 5.116] (x3.01), "
                               "the scale set by held adversarial.")
    assert "held coefficient(s) adversarial" in report.note() and "--fixed rate=0.135,1.7" in report.note()


def test_without_held_coefficients_the_anchor_is_named():
    report = describe_scale({"rate": (1.0, 2.0)}, {"rate": 0.5}, anchors={"l2": ("l2", "l1")})
    assert report.header().endswith("the scale set by anchor l2.") and not report.held


def test_no_range_no_header():
    assert describe_scale({"l2": 1.0}, {"l2": 2.0}).header() == ""


def test_a_range_the_user_holds_is_reported_as_held_not_moved():
    report = describe_scale({"rate": (0.4063, 5.116)}, {"rate": 0.3323}, fixed={"rate": (0.135, 1.7)})
    assert not report.moved and report.note() is None
    assert report.header() == "Operating point kept: rate [0.135, 1.7] (held; the base had [0.4063, 5.116])."
