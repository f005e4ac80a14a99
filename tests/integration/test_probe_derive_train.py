"""The README's loop on a tiny preset: probe stlic -> Table I -> derive -> train from the derived config."""
from __future__ import annotations

import json

import pytest
import yaml

from gradbalance.io.run import ProbeRun

from .cli_runs import ROOT, run_cli, training_images

pytestmark = pytest.mark.slow
LOSSES = ["rate", "l2", "l1", "lpips", "wasserstein", "adversarial"]


def test_probe_writes_table1(probe_run):
    run = ProbeRun.load(probe_run)
    table = run.table()
    assert list(table.losses) == LOSSES and list(table.groups) == ["main", "refiner"]
    # distortion and rate losses never reach the refiner: absent, printed "-"
    for loss in ("rate", "l2", "l1"):
        assert table.cell(loss, "refiner") == "-"
    for loss in ("lpips", "wasserstein", "adversarial"):
        assert table.cell(loss, "refiner") != "-" and table.cell(loss, "main") != "-"
    shares = table.mean
    assert abs(shares["main"].sum() - 100) < 1e-6 and abs(shares["refiner"].sum() - 100) < 1e-6
    assert sorted(run.records["step"].unique()) == [0, 2]  # every=2 over 4 steps
    assert (probe_run / "table.md").is_file() and run.has_precond
    assert json.loads((probe_run / "run.json").read_text())["steps"] == 4


def test_probe_output_in_context(probe_run):
    """The quick start ends with why Table II's weights give these shares and what to run next."""
    printed = (probe_run.parent / "stdout.txt").read_text()
    tables_end = printed.rindex("beside paper")
    epilogue = printed[tables_end:]
    assert "Why these shares" in epilogue and "Table II" in epilogue
    assert "--config configs/derived/paper_table1_cpu_iter4.yaml" in epilogue
    assert (ROOT / "configs" / "derived" / "paper_table1_cpu_iter4.yaml").is_file()
    assert "1.3 pp" in epilogue and "1.3 pp" in (ROOT / "reports" / "table1" / "README.md").read_text()


def test_derive_then_train(probe_run, tmp_path):
    derived = tmp_path / "configs" / "derived" / "equal.yaml"
    run_cli("gradbalance", "derive", str(probe_run), "--target", "equal",
            "--base", str(ROOT / "configs" / "stlic_tiny.yaml"), "--out", str(derived))
    weights = yaml.safe_load(derived.read_text())["loss_weights"]
    assert set(weights) == set(LOSSES)
    base = yaml.safe_load((ROOT / "configs" / "stlic_tiny.yaml").read_text())["loss_weights"]
    assert weights != base
    out = tmp_path / "train"
    data = training_images()
    run_cli("stlic", "train", "--config", str(derived), "--steps", "2", "--out", str(out),
            *(["--data", *data] if data else []))
    assert (out / "model.pt").is_file()
    logged = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert logged[-1]["step"] == 2
    assert logged[-1]["weighted/l2"] == pytest.approx(
        weights["l2"] * logged[-1]["loss/l2"], rel=1e-6)
