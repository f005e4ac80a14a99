"""BD-rate / BD-PSNR on synthetic curves with known answers; anchor files; table and plot."""
import json

import numpy as np
import pytest

from stlic.cli import main as stlic_main
from stlic.evaluation.rd import RDCurve, bd_metrics, compare_to_anchors, load_anchor_csv, load_eval_summaries
from stlic.evaluation.rd_plot import plot_rd_curve
from stlic.evaluation.table import TableRow, table3_markdown
from stlic.paths import REPO_ROOT

ANCHORS = REPO_ROOT / "reports" / "anchors"


def _curve(method, bpp, psnr, lpips=None):
    metrics = {"psnr": np.asarray(psnr, float)}
    if lpips is not None:
        metrics["lpips"] = np.asarray(lpips, float)
    return RDCurve(method, np.asarray(bpp, float), metrics)


def test_bd_rate_of_rates_scaled_by_0_9_is_minus_10_percent():
    bpp, psnr = [0.1, 0.2, 0.3, 0.45], [29.0, 31.0, 32.5, 34.0]
    anchor, test = _curve("a", bpp, psnr), _curve("t", 0.9 * np.array(bpp), psnr)
    rate, _ = bd_metrics(anchor, test)
    assert rate == pytest.approx(-10.0, abs=1e-6)


def test_bd_psnr_of_a_curve_shifted_by_half_a_db_is_half_a_db():
    bpp, psnr = [0.1, 0.2, 0.3, 0.45], [29.0, 31.0, 32.5, 34.0]
    _, quality = bd_metrics(_curve("a", bpp, psnr), _curve("t", bpp, np.array(psnr) + 0.5))
    assert quality == pytest.approx(0.5, abs=1e-9)


def test_bd_on_lpips_treats_lower_as_better():
    bpp, lpips = [0.1, 0.2, 0.3, 0.45], [0.20, 0.12, 0.08, 0.05]
    anchor = _curve("a", bpp, [0, 1, 2, 3], lpips)
    test = _curve("t", 0.8 * np.array(bpp), [0, 1, 2, 3], lpips)
    rate, _ = bd_metrics(anchor, test, "lpips")
    assert rate == pytest.approx(-20.0, abs=1e-6)
    _, quality = bd_metrics(anchor, _curve("t", bpp, [0, 1, 2, 3], np.array(lpips) - 0.01), "lpips")
    assert quality == pytest.approx(-0.01, abs=1e-9)


def test_too_few_points_give_nan_with_a_note():
    anchor = load_anchor_csv(ANCHORS / "lalic_kodak.csv")
    rows = compare_to_anchors([_curve("one", [0.2], [31.0])], [anchor])
    assert len(rows) == 1 and np.isnan(rows[0].bd_rate) and "at least 3" in rows[0].note


def test_insufficient_overlap_is_reported_in_the_note():
    lalic = load_anchor_csv(ANCHORS / "lalic_kodak.csv")
    msillm = load_anchor_csv(ANCHORS / "msillm_kodak.csv")
    (row,) = compare_to_anchors([msillm], [lalic], metrics=("psnr",))
    assert row.bd_rate > 0 and "overlap" in row.note.lower()


def test_shipped_anchor_files_load_with_their_published_points():
    lalic = load_anchor_csv(ANCHORS / "lalic_kodak.csv")
    msillm = load_anchor_csv(ANCHORS / "msillm_kodak.csv")
    assert lalic.method == "LALIC" and list(lalic.bpp) == [0.115, 0.186, 0.286, 0.426]
    assert list(msillm.metrics["lpips"]) == [0.110, 0.073, 0.045]
    # LALIC is MSE-optimised: better PSNR at equal rate than the perceptual MS-ILLM
    rate, quality = bd_metrics(lalic, msillm, "psnr")
    assert rate > 0 and quality < 0


def test_anchor_csv_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("bpp,ssim\n0.1,0.9\n")
    with pytest.raises(ValueError, match=r"bad.csv: missing column\(s\) \['psnr'\]"):
        load_anchor_csv(bad)
    with pytest.raises(FileNotFoundError, match="nothere.csv"):
        load_anchor_csv(tmp_path / "nothere.csv")


def test_eval_summaries_group_by_method_and_plot(tmp_path):
    for i, (bpp, psnr, lpips) in enumerate([(0.3, 32.0, 0.05), (0.1, 28.0, 0.12), (0.2, 30.0, 0.08)]):
        summary = {"method": "mine", "bpp": bpp, "outputs": {"refined": {"psnr": psnr, "lpips": lpips}}}
        (tmp_path / f"r{i}").mkdir()
        (tmp_path / f"r{i}" / "summary.json").write_text(json.dumps(summary))
    (curve,) = load_eval_summaries(sorted(tmp_path.glob("r*")))
    assert list(curve.bpp) == [0.1, 0.2, 0.3] and list(curve.metrics["psnr"]) == [28.0, 30.0, 32.0]
    with pytest.raises(ValueError, match="no 'decoder' output"):
        load_eval_summaries([tmp_path / "r0"], output="decoder")
    path = plot_rd_curve([curve], [load_anchor_csv(ANCHORS / "msillm_kodak.csv")], "lpips", tmp_path / "lpips.png")
    assert path is not None and path.stat().st_size > 0
    assert plot_rd_curve([curve], [], "fid", tmp_path / "fid.png") is None


def test_table3_layout():
    text = table3_markdown([TableRow("B", 0.2, 30.0, 0.95, 0.08, None), TableRow("A", 0.1, 28.123, None, 0.1, 12.0)], "ST-LPIPS(vgg)", "FID/256")
    lines = text.splitlines()
    assert lines[0] == "| Method | bpp | PSNR (dB) ↑ | MS-SSIM ↑ | ST-LPIPS(vgg) ↓ | FID/256 ↓ |"
    assert lines[2] == "| A | 0.1000 | 28.12 | - | 0.1000 | 12.00 |"
    assert lines[3].startswith("| B | 0.2000 | 30.00 | 0.9500")


def test_stlic_rd_command_writes_plots_and_bd_table(tmp_path, capsys):
    lalic = load_anchor_csv(ANCHORS / "lalic_kodak.csv")
    results = []
    for i, (bpp, psnr) in enumerate(zip(lalic.bpp, lalic.metrics["psnr"])):  # LALIC's curve at 0.9x the rate
        summary = {"method": "mine", "bpp": 0.9 * bpp, "outputs": {"refined": {"psnr": psnr + 0.0, "lpips": None}}}
        results.append(tmp_path / f"s{i}.json")
        results[-1].write_text(json.dumps(summary))
    out = tmp_path / "rd"
    assert stlic_main(["rd", *map(str, results), "--anchors", str(ANCHORS / "lalic_kodak.csv"), "--out", str(out)]) == 0
    assert "| mine | LALIC | psnr | -10.00 |" in capsys.readouterr().out
    assert (out / "rd_psnr.png").is_file() and not (out / "rd_lpips.png").exists()
    bd = (out / "bd.csv").read_text().splitlines()
    assert bd[0] == "method,anchor,metric,bd_rate,bd_quality,note" and len(bd) == 2
    assert stlic_main(["rd", str(tmp_path / "missing"), "--out", str(out)]) == 2
