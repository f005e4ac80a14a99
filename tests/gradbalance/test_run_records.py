"""gradbalance/io/run.py: a truncated records.csv is read with a warning saying what is missing."""
from __future__ import annotations

import warnings

import pytest

from gradbalance.io.run import RECORDS, ProbeRun
from probe_run_files import write_probe_run


def test_a_complete_run_loads_without_warning(tmp_path):
    write_probe_run(tmp_path / "run", steps=12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run = ProbeRun.load(tmp_path / "run")
    assert sorted(run.records["step"].unique()) == list(range(12)) and len(run.table().steps) == 12


def test_a_file_cut_mid_line_drops_the_partial_step_and_warns(tmp_path):
    write_probe_run(tmp_path / "run", steps=12)
    path = tmp_path / "run" / RECORDS
    lines = path.read_text().splitlines(keepends=True)
    cut = 1 + 8 * 6 + 3  # header, 8 whole steps of 6 records, 3 records of step 8
    path.write_text("".join(lines[:cut]) + lines[cut][:9])  # and half a line
    with pytest.warns(UserWarning, match=r"cut mid-record.*last step 8 has 3 of 6 records.*8 of the 12 probed steps"):
        run = ProbeRun.load(tmp_path / "run")
    assert sorted(run.records["step"].unique()) == list(range(8))
    assert len(run.table().steps) == 8


def test_whole_steps_missing_are_reported_from_run_json(tmp_path):
    write_probe_run(tmp_path / "run", steps=12)
    path = tmp_path / "run" / RECORDS
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:1 + 5 * 6]))  # cut on a line boundary after 5 steps
    with pytest.warns(UserWarning, match=r"holds 5 of the 12 probed steps"):
        ProbeRun.load(tmp_path / "run")


def test_a_file_that_is_not_a_records_table_is_a_clear_error(tmp_path):
    write_probe_run(tmp_path / "run", steps=2)
    (tmp_path / "run" / RECORDS).write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['group', 'loss', 'norm', 'step'\]"):
        ProbeRun.load(tmp_path / "run")
