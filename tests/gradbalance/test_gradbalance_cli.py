"""End to end (gradbalance/cli.py): ``python -m gradbalance probe`` on the example target, then table / derive / plot.

The probe runs in a subprocess (a fresh interpreter importing torch and drawing six figures), so
the tests that use its run directory are marked slow.
"""
from __future__ import annotations

import json
from importlib.metadata import entry_points
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from gradbalance.cli import main
from gradbalance.io.run import ProbeRun


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    done = subprocess.run([sys.executable, "-m", "gradbalance", "probe", "--model", "example", "--steps", "6",
                           "--every", "2", "--cosine", "--patch-size", "16", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "| loss | encoder | decoder |" in done.stdout and "TinyAutoencoder" in done.stdout
    return out


@pytest.mark.slow
def test_probe_writes_records_tables_plots_and_metadata(run_dir):
    names = {p.name for p in run_dir.iterdir()}
    for stem in ("table", "precond_table"):
        assert {f"{stem}.md", f"{stem}.csv", f"{stem}.tex"} <= names
    assert {"records.csv", "cosine.csv", "run.json", "heatmap.png", "stacked.png", "shares_over_steps.png",
            "precond_heatmap.png"} <= names
    records = pd.read_csv(run_dir / "records.csv")
    assert sorted(records["step"].unique()) == [0, 2, 4]
    assert records.query("loss == 'rate' and group == 'decoder'")["norm"].isna().all()
    np.testing.assert_allclose(records["norm"], records["raw_norm"] * records["weight"].abs())
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["model"] == "example" and meta["steps"] == 6 and meta["every"] == 2
    assert meta["loss_order"] == ["rate", "l2", "l1"] and meta["groups"] == ["encoder", "decoder"]


@pytest.mark.slow
def test_table_command_rebuilds_the_saved_table(run_dir, capsys):
    saved = (run_dir / "table.md").read_text().strip()
    assert main(["table", str(run_dir)]) == 0
    assert saved in capsys.readouterr().out
    assert main(["table", str(run_dir), "--window", "1", "--format", "latex"]) == 0
    latex = capsys.readouterr().out
    assert "1 probed steps" in latex and r"\begin{tabular}{lcc}" in latex and "rate & " in latex


def test_console_script_is_registered():
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("gradbalance") == "gradbalance.cli:main"


@pytest.mark.slow
def test_derive_command_exports_a_config(run_dir, tmp_path, capsys):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"loss_weights": {"rate": [0.002, 0.02], "l2": 1.0, "l1": 0.1}, "seed": 1}))
    targets = tmp_path / "targets.yaml"
    targets.write_text(yaml.safe_dump({"decoder": {"l2": 60.0, "l1": 40.0}}))
    out = tmp_path / "derived" / "x.yaml"
    assert main(["derive", str(run_dir), "--target", str(targets), "--base", str(base), "--out", str(out),
                 "--fixed", "l2=1.0"]) == 0
    derived = yaml.safe_load(out.read_text())
    # independent reference: the multiplier m of l1 whose mean per-step decoder share is 40 %
    decoder = ProbeRun.load(run_dir).records.query("group == 'decoder'").pivot(index="step", columns="loss",
                                                                               values="norm")
    from scipy.optimize import brentq

    m = brentq(lambda m: np.mean(m * decoder["l1"] / (decoder["l2"] + m * decoder["l1"])) - 0.4, 1e-6, 1e6,
               xtol=1e-14)
    assert derived["loss_weights"]["l1"] == pytest.approx(0.1 * m, rel=1e-6)
    assert derived["loss_weights"]["rate"] == [0.002, 0.02] and derived["seed"] == 1
    # rate reaches no targeted cell, so its range is kept; l1 moved against it by m, and the header says so
    if abs(m - 1) > 0.1:
        assert "# Range kept: rate [0.002, 0.02]; but the weights it trades against" in out.read_text()
        assert f"l1 x{m:.3g}" in out.read_text()
    else:
        assert "# Operating point kept: rate [0.002, 0.02]." in out.read_text()
    encoder = tmp_path / "encoder.yaml"
    encoder.write_text(yaml.safe_dump({"encoder": {"rate": 20.0, "l2": 50.0, "l1": 30.0}}))
    moved = tmp_path / "derived" / "moved.yaml"
    assert main(["derive", str(run_dir), "--target", str(encoder), "--base", str(base), "--out", str(moved),
                 "--fixed", "l2=1.0"]) == 0
    header, error = moved.read_text(), capsys.readouterr().err
    factor = yaml.safe_load(header)["loss_weights"]["rate"][0] / 0.002
    assert f"# Operating point moved: rate [0.002, 0.02] -> [{0.002 * factor:.4g}, {0.02 * factor:.4g}]" in header
    assert "the scale set by held l2" in header
    assert "the held coefficient(s) l2 set the common scale" in error and "--fixed rate=0.002,0.02" in error
    assert main(["derive", str(run_dir), "--target", "equal", "--base", str(base), "--out", str(out)]) == 2
    assert "already exists; use --force" in capsys.readouterr().err
    assert main(["derive", str(run_dir), "--target", "equal", "--base", str(base), "--out", str(out), "-f"]) == 0
    assert "residual" in capsys.readouterr().out
    assert main(["derive", str(run_dir), "--target", "equal", "--base", str(base), "--out", str(out), "-f",
                 "--fixed", "oops"]) == 2
    assert "--fixed expects" in capsys.readouterr().err


@pytest.mark.slow
def test_plot_command_and_missing_run(run_dir, tmp_path, capsys):
    (run_dir / "heatmap.png").unlink()
    assert main(["plot", str(run_dir)]) == 0
    assert (run_dir / "heatmap.png").stat().st_size > 0
    assert main(["table", str(tmp_path / "nowhere")]) == 2
    assert "not a probe run" in capsys.readouterr().err


@pytest.mark.slow
def test_derive_verify_and_precond_remeasure(run_dir, tmp_path, capsys):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"loss_weights": {"rate": [0.002, 0.02], "l2": 1.0, "l1": 0.1}}))
    targets = tmp_path / "targets.yaml"
    table = ProbeRun.load(run_dir).table()
    reachable = {"decoder": {"l2": 70.0, "l1": 30.0}}
    targets.write_text(yaml.safe_dump(reachable))
    out = tmp_path / "verified.yaml"
    assert main(["derive", str(run_dir), "--target", str(targets), "--base", str(base), "--out", str(out),
                 "--fixed", "l2=1.0", "--verify"]) == 0
    printed = capsys.readouterr().out
    assert "predicted vs re-measured shares" in printed and "largest miss of the re-measured shares" in printed
    assert "Re-measured: largest miss" in out.read_text()
    assert table.mean.loc["l1", "decoder"] != pytest.approx(30.0, abs=1.0)  # the target needs new weights
    precond = tmp_path / "precond.yaml"
    code = main(["derive", str(run_dir), "--target", str(targets), "--base", str(base), "--out", str(precond),
                 "--fixed", "l2=1.0", "--precond", "--max-iterations", "3"])
    captured = capsys.readouterr()
    if code == 0:
        assert "re-measurement 1: largest miss" in captured.out and precond.is_file()
    else:  # refused with its reason, nothing written
        assert "did not converge" in captured.err and not precond.exists()
    targets.write_text(yaml.safe_dump({"decoder": {"l2": "fifty", "l1": 30.0}}))
    assert main(["derive", str(run_dir), "--target", str(targets), "--base", str(base), "--out", str(out),
                 "--force"]) == 2
    assert "target share of 'l2' in 'decoder' must be a number, got 'fifty'" in capsys.readouterr().err
