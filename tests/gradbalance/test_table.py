"""ContributionTable: per-step shares, window, absent cells, Table I renderings, saved-run round trip."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gradbalance import ContributionTable, GradientProbe
from gradbalance.io.run import ProbeRun, save_run

rng = np.random.default_rng(0)
STEPS = [0, 10, 20, 30]
NORMS = {  # (loss, group) -> norm per step; NaN = absent
    ("rate", "enc"): rng.uniform(0.1, 1, 4), ("rate", "dec"): np.full(4, np.nan),
    ("l2", "enc"): rng.uniform(0.1, 1, 4), ("l2", "dec"): rng.uniform(0.1, 1, 4),
    ("l1", "enc"): np.zeros(4), ("l1", "dec"): rng.uniform(0.1, 1, 4),
}


def records() -> pd.DataFrame:
    rows = [dict(step=s, loss=l, group=g, weight=0.5, value=1.0, norm=n[k], raw_norm=2 * n[k])
            for (l, g), n in NORMS.items() for k, s in enumerate(STEPS)]
    return pd.DataFrame(rows).sample(frac=1.0, random_state=1)  # order must not matter


def hand_share(loss: str, group: str, steps: list[int]) -> tuple[float, float]:
    idx = [STEPS.index(s) for s in steps]
    per_step = [100 * NORMS[loss, group][k] / np.nansum([NORMS[l, group][k] for l in ("rate", "l2", "l1")])
                for k in idx]
    return float(np.mean(per_step)), float(np.std(per_step))


@pytest.mark.parametrize("window", [None, 1, 3])
def test_shares_mean_std_match_hand_computation(window):
    table = ContributionTable.from_records(records(), window=window, loss_order=["rate", "l2", "l1"],
                                           group_order=["enc", "dec"])
    steps = STEPS if window is None else STEPS[-window:]
    assert table.steps == tuple(steps)
    assert table.losses == ("rate", "l2", "l1") and table.groups == ("enc", "dec")
    for loss, group in NORMS:
        mean = table.mean.loc[loss, group]
        if (loss, group) == ("rate", "dec"):
            assert np.isnan(mean) and table.cell(loss, group) == "-"
            continue
        expected_mean, expected_std = hand_share(loss, group, steps)
        assert mean == pytest.approx(expected_mean, rel=1e-12, abs=1e-12)
        assert table.std.loc[loss, group] == pytest.approx(expected_std, rel=1e-9, abs=1e-12)
    assert table.mean.loc["l1", "enc"] == 0.0 and table.cell("l1", "enc") == "0.0 ± 0.0"  # zero, not absent
    np.testing.assert_allclose(table.mean.sum(axis=0), 100.0)
    assert table.weights.to_dict() == {"rate": 0.5, "l2": 0.5, "l1": 0.5}


def test_renderings_have_table_one_layout(tmp_path):
    table = ContributionTable.from_records(records(), loss_order=["rate", "l2", "l1"], group_order=["enc", "dec"])
    md = table.to_markdown().splitlines()
    assert md[0] == "| loss | enc | dec |" and md[2].startswith("| rate | ") and md[2].endswith("| - |")
    assert f"| {table.cell('l2', 'enc')} |" in md[3]
    latex = table.to_latex(caption="Table I")
    assert r"\begin{tabular}{lcc}" in latex and r"$\pm$" in latex and r"\caption{Table I}" in latex
    table.to_csv(tmp_path / "t.csv")
    back = pd.read_csv(tmp_path / "t.csv", index_col="loss", keep_default_na=False)
    assert back.loc["rate", "dec"] == "-" and back.loc["l2", "enc"] == table.cell("l2", "enc")


def test_rebuilt_from_saved_run_equals_live_table(tmp_path, mlp_case):
    probe = GradientProbe(mlp_case.model, mlp_case.groups, loss_order=["fit", "aux", "sparse"])
    for _ in range(3):
        probe.backward(mlp_case.losses(), mlp_case.weights)
    save_run(tmp_path, probe.records, probe.cosine_records, {"loss_order": list(probe.loss_order),
                                                            "groups": list(probe.partition.names)})
    live, saved = probe.table(window=2), ProbeRun.load(tmp_path).table(window=2)
    pd.testing.assert_frame_equal(live.mean, saved.mean, rtol=1e-12)
    assert live.to_markdown() == saved.to_markdown()
    assert live.losses == ("fit", "aux", "sparse") and live.cell("fit", "unused") == "-"


def test_bad_records_are_named():
    with pytest.raises(ValueError, match="lack column"):
        ContributionTable.from_records(records().drop(columns="norm"))
    with pytest.raises(ValueError, match="no probed steps"):
        ContributionTable.from_records(records().iloc[:0])
    with pytest.raises(ValueError, match="window"):
        ContributionTable.from_records(records(), window=0)
