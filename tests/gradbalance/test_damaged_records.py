"""Fuzz of damaged ``records.csv`` files (gradbalance/io/record_checks.py, derive's non-finite cells).

A run written as the probe writes it (``norm = |w| raw_norm``, a ``reached`` column) is damaged at
random lines and columns: NaN / inf / negative norms, NaN and fractional steps, text, a duplicated
record. ``gradbalance table`` and ``derive`` answer each with one error line naming the file, the
line and the column, and derive writes nothing. A recorded NaN gradient (norm and raw_norm both
NaN) is kept: derive leaves its steps out and says so, or refuses when a targeted cell has none.
"""
from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
import yaml

from gradbalance import ContributionTable, derive_coefficients
from gradbalance.cli import main
from gradbalance.io.run import RECORDS, ProbeRun, save_run
from gradbalance.probe.stats import StepStats, records_frame

LOSSES, GROUPS = ("rate", "l2", "l1"), ("encoder", "decoder")
WEIGHTS = {"rate": 0.01, "l2": 1.0, "l1": 0.1}


def write_run(folder, steps=6, nonfinite=()):
    """A probe run as `gradbalance probe` saves it (StepStats rows); ``nonfinite``: (step, loss, group)
    cells whose gradient was NaN (norm and raw_norm NaN, reached)."""
    rng = np.random.default_rng(0)
    stats = []
    for step in range(steps):
        raw = rng.uniform(0.5, 2.0, (len(LOSSES), len(GROUPS)))
        raw[0, 1] = np.nan  # the rate does not reach the decoder
        for cell_step, loss, group in nonfinite:
            if cell_step == step:
                raw[LOSSES.index(loss), GROUPS.index(group)] = np.nan
        reached = np.ones_like(raw, dtype=bool)
        reached[0, 1] = False
        stats.append(StepStats(step, LOSSES, GROUPS, np.ones(3), np.array([WEIGHTS[l] for l in LOSSES]), raw, reached))
    metadata = {"model": "synthetic", "steps": steps, "every": 1, "loss_order": list(LOSSES), "groups": list(GROUPS)}
    return save_run(folder, records_frame(stats), pd.DataFrame(), metadata)


@pytest.fixture
def base(tmp_path):
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump({"loss_weights": WEIGHTS}))
    return path


def _derive(run, base, out, target="equal"):
    return main(["derive", str(run), "--target", target, "--base", str(base), "--out", str(out)])


def _damages(rows: int, seed: int = 0):
    """(line, column, value) edits; line = the file's line (header = 1)."""
    rng = random.Random(seed)
    cases = []
    for value in ("nan", "inf", "-inf", "-0.25", "abc"):
        for column in ("norm", "raw_norm"):
            cases.append((rng.randrange(2, rows + 2), column, value))
    for value in ("nan", "", "2.5", "inf", "x"):
        cases.append((rng.randrange(2, rows + 2), "step", value))
    cases.append((rng.randrange(2, rows + 2), "reached", "maybe"))
    cases.append((rng.randrange(2, rows + 2), "loss", ""))
    return cases


def _edit(path, line, column, value):
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[line - 1].split(",")
    if value == "nan" and column in ("norm", "raw_norm") and cells[header.index("reached")] == "False":
        return False  # an absent cell's norms are NaN
    cells[header.index(column)] = value
    lines[line - 1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    return True


@pytest.mark.parametrize("line, column, value", _damages(rows=6 * 6), ids=lambda v: str(v))
@pytest.mark.parametrize("command", ["table", "derive"])
def test_a_damaged_record_is_one_line_naming_file_line_and_column(tmp_path, base, capsys, command, line, column, value):
    run = write_run(tmp_path / "run")
    if not _edit(run / RECORDS, line, column, value):
        pytest.skip("not damage: the probe writes this value")
    out = tmp_path / "derived.yaml"
    status = _derive(run, base, out) if command == "derive" else main(["table", str(run)])
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert status == 2 and len(err) == 1, err
    assert err[0].startswith(f"gradbalance {command}: error: {run / RECORDS} line {line} ")
    assert f"column {column}:" in err[0]
    assert not out.exists()


def test_a_duplicated_record_names_both_lines(tmp_path, base, capsys):
    run = write_run(tmp_path / "run")
    lines = (run / RECORDS).read_text().splitlines()
    (run / RECORDS).write_text("\n".join([*lines[:10], lines[4], *lines[10:]]) + "\n")
    assert _derive(run, base, tmp_path / "o.yaml") == 2
    assert "line 11 (step 0, loss 'l2', group 'decoder'): the same (step, loss, group) as line 5" \
        in capsys.readouterr().err
    assert not (tmp_path / "o.yaml").exists()


def test_every_rate_norm_nan_is_refused_not_turned_into_coefficients(tmp_path, base, capsys):
    """The issue's case, as a probe would record it: rate's encoder gradient NaN in every step."""
    run = write_run(tmp_path / "run", nonfinite=[(t, "rate", "encoder") for t in range(6)])
    assert main(["table", str(run)]) == 0
    table_out = capsys.readouterr().out
    assert "| rate | non-finite | - |" in table_out
    assert _derive(run, base, tmp_path / "o.yaml") == 2
    err = capsys.readouterr().err
    assert "every probed step of group 'encoder' has a non-finite norm (rate; steps 0, 1, 2, 3, 4, 5)" in err
    assert not (tmp_path / "o.yaml").exists()
    # a target that leaves the encoder alone is derived from the decoder alone, with a warning
    target = tmp_path / "target.yaml"
    target.write_text(yaml.safe_dump({"decoder": {"l2": 70.0, "l1": 30.0}}))
    with pytest.warns(UserWarning, match="dropped 6 of 6 probed steps of group 'encoder'"):
        assert _derive(run, base, tmp_path / "o.yaml", str(target)) == 0
    assert yaml.safe_load((tmp_path / "o.yaml").read_text())["loss_weights"]["rate"] == WEIGHTS["rate"]


def test_some_nan_steps_are_dropped_and_named_and_the_fit_uses_the_rest(tmp_path):
    """Reference: the same derive on the records without the damaged steps of that group."""
    bad = [(1, "l2", "encoder"), (4, "l1", "encoder")]
    run = ProbeRun.load(write_run(tmp_path / "run", nonfinite=bad))
    target = {"encoder": {"rate": 20.0, "l2": 50.0, "l1": 30.0}}
    with pytest.warns(UserWarning, match=r"dropped 2 of 6 probed steps of group 'encoder' \(non-finite norm of "
                                         r"l2, l1 at steps 1, 4\)"):
        result = derive_coefficients(run.table(), target)
    records = run.records
    clean = records[~(records["step"].isin([1, 4]) & (records["group"] == "encoder"))]
    reference = derive_coefficients(ContributionTable.from_records(clean, loss_order=LOSSES), target)
    assert result.dropped == {"encoder": (1, 4)} and reference.dropped == {}
    assert result.feasible and reference.feasible
    for loss in LOSSES:
        assert np.isclose(result.coefficients[loss], reference.coefficients[loss], rtol=1e-9)
    assert np.allclose(result.predicted["encoder"], [20.0, 50.0, 30.0])


def test_a_negative_norm_in_a_hand_built_frame_is_refused():
    frame = pd.DataFrame({"step": [0, 0], "loss": ["a", "b"], "group": ["g", "g"], "weight": [1.0, 1.0],
                          "norm": [1.0, -2.0]})
    with pytest.raises(ValueError, match="negative norm -2.0"):
        ContributionTable.from_records(frame)
