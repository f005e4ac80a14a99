"""`stlic rd` never compares LPIPS of different variants: anchors name theirs, a mismatch is a
NaN BD row with a note, a warning, and the anchor left off the LPIPS figure."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from stlic.cli import main as stlic_main
from stlic.evaluation.rd import compare_to_anchors, load_anchor_csv, load_eval_summaries
from stlic.paths import REPO_ROOT

MSILLM = REPO_ROOT / "reports" / "anchors" / "msillm_kodak.csv"


def _summaries(tmp_path, variant, scale=0.9):
    """Three eval summaries on MS-ILLM's curve at ``scale`` x its rate, labelled ``variant``."""
    anchor = load_anchor_csv(MSILLM)
    paths = []
    for i, (bpp, psnr, lpips) in enumerate(zip(anchor.bpp, anchor.metrics["psnr"], anchor.metrics["lpips"])):
        summary = {"method": "mine", "bpp": scale * bpp, "lpips_name": variant,
                   "outputs": {"refined": {"psnr": psnr, "lpips": lpips}}}
        paths.append(tmp_path / f"s{i}.json")
        paths[-1].write_text(json.dumps(summary))
    return paths


def test_the_shipped_lpips_anchor_names_its_variant():
    assert load_anchor_csv(MSILLM).lpips_variant == "LPIPS(alex)"


def test_an_anchor_with_lpips_but_no_variant_is_refused(tmp_path):
    path = tmp_path / "anchor.csv"
    path.write_text("method,bpp,psnr,lpips\nX,0.1,28,0.1\nX,0.2,30,0.07\n")
    with pytest.raises(ValueError, match="lpips_variant"):
        load_anchor_csv(path)


def test_different_variants_are_not_compared(tmp_path):
    curves = load_eval_summaries(_summaries(tmp_path, "ST-LPIPS(vgg)"))
    with pytest.warns(UserWarning, match=r"LPIPS variants differ \(ST-LPIPS\(vgg\) vs LPIPS\(alex\)\)"):
        rows = {row.metric: row for row in compare_to_anchors(curves, [load_anchor_csv(MSILLM)])}
    assert math.isnan(rows["lpips"].bd_rate) and "not compared" in rows["lpips"].note
    assert rows["psnr"].bd_rate == pytest.approx(-10.0, abs=1e-6)  # PSNR is still compared


def test_the_same_variant_is_compared(tmp_path):
    curves = load_eval_summaries(_summaries(tmp_path, "LPIPS(alex)"))
    rows = {row.metric: row for row in compare_to_anchors(curves, [load_anchor_csv(MSILLM)])}
    assert rows["lpips"].bd_rate == pytest.approx(-10.0, abs=1e-6) and rows["lpips"].note == ""


def test_rd_command_warns_and_leaves_the_anchor_off_the_lpips_figure(tmp_path, capsys):
    out = tmp_path / "rd"
    with pytest.warns(UserWarning) as caught:
        assert stlic_main(["rd", *map(str, _summaries(tmp_path, "ST-LPIPS(vgg)")), "--anchors", str(MSILLM),
                           "--out", str(out)]) == 0
    messages = " | ".join(str(w.message) for w in caught)
    assert "anchor 'MS-ILLM' left out of rd_lpips.png: LPIPS variants differ" in messages
    assert "mine vs MS-ILLM: LPIPS variants differ" in messages
    assert "| mine | MS-ILLM | lpips | - | - | LPIPS variants differ" in capsys.readouterr().out
    assert (out / "rd_lpips.png").is_file()  # our own curve, alone


def test_summaries_of_one_method_with_mixed_variants_are_refused(tmp_path):
    paths = _summaries(tmp_path, "LPIPS(alex)")
    data = json.loads(paths[0].read_text())
    paths[0].write_text(json.dumps({**data, "lpips_name": "ST-LPIPS(vgg)"}))
    with pytest.raises(ValueError, match="different LPIPS variants"):
        load_eval_summaries(paths)
    assert np.isfinite(load_eval_summaries(paths[1:])[0].bpp).all()
