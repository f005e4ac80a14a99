"""Validation of a saved ``records.csv``: damaged records are an error naming file, line and column.

A probe writes one record per (step, loss, group) with ``norm = |weight| * raw_norm`` (see
:mod:`gradbalance.probe.stats`). A record that no probe writes is refused on load, before any table or
coefficient is computed from it:

* ``step`` not a whole number (empty, NaN, inf, 2.5, text);
* ``loss`` or ``group`` empty; the same (step, loss, group) twice;
* a negative ``norm``, ``raw_norm`` or ``precond_norm`` (a norm is >= 0), or text in a number column;
* with a ``reached`` column: a value other than True/False, a finite norm in a cell marked not
  reached, a non-finite ``raw_norm`` beside a finite ``norm``, and a non-finite ``norm`` (NaN, inf) whose ``raw_norm`` and ``weight`` are both finite
  (``|w| * raw`` cannot be NaN or inf: the norm was edited or damaged). A non-finite norm with a
  non-finite ``raw_norm`` is a recorded NaN/inf gradient: kept, and marked ``non-finite`` in tables.

Files written before the ``reached`` column existed read a NaN norm as "absent", as before.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

NORM_COLUMNS = ("norm", "raw_norm", "precond_norm")
_BOOLEAN = {"true": True, "false": False, "1": True, "0": False, "1.0": True, "0.0": False}


def _line(records: pd.DataFrame, position: int) -> str:
    """'line N (step s, loss 'l', group 'g')' of the record at ``position`` (header = line 1)."""
    row = records.iloc[position]
    where = ", ".join(f"{key} {row[key]!r}" if key != "step" else f"step {row[key]}"
                      for key in ("step", "loss", "group") if key in records.columns)
    return f"line {int(records.index[position]) + 2} ({where})"


def _refuse(path: Path, records: pd.DataFrame, mask: np.ndarray | pd.Series, column: str, problem: str) -> None:
    """Raise for the first record where ``mask`` holds, naming file, line and column."""
    mask = np.asarray(mask, dtype=bool)
    if mask.any():
        position = int(np.flatnonzero(mask)[0])
        value = records[column].iloc[position]
        more = f" ({int(mask.sum()) - 1} more such record(s))" if mask.sum() > 1 else ""
        raise ValueError(f"{path} {_line(records, position)}, column {column}: {value!r} {problem}{more}")


def _numbers(path: Path, records: pd.DataFrame, column: str) -> pd.Series:
    """``column`` as floats; text that is not a number is refused."""
    values = pd.to_numeric(records[column], errors="coerce")
    _refuse(path, records, values.isna() & records[column].notna(), column, "is not a number")
    return values.astype(float)


def _reached(path: Path, records: pd.DataFrame) -> pd.Series:
    """The ``reached`` column as bools (True/False as pandas or a user wrote them)."""
    column = records["reached"]
    if column.dtype == bool:
        return column
    parsed = column.map(lambda v: _BOOLEAN.get(str(v).strip().lower()) if pd.notna(v) else None)
    _refuse(path, records, parsed.isna(), "reached", "is not True or False")
    return parsed.astype(bool)


def validate_records(records: pd.DataFrame, path: Path) -> pd.DataFrame:
    """``records`` with ``step`` as integers and ``reached`` as bools, or a ValueError naming the
    first damaged record (see module docstring). ``records.index`` must be the file's row order."""
    records = records.copy()
    steps = pd.to_numeric(records["step"], errors="coerce").astype(float)
    whole = np.isfinite(steps) & (steps == np.round(steps))
    _refuse(path, records, ~whole, "step", "is not a step number (a whole number)")
    records["step"] = steps.astype(np.int64)
    for column in ("loss", "group"):
        empty = records[column].isna() | (records[column].astype(str).str.strip() == "")
        _refuse(path, records, empty, column, "is empty: every record names its loss and group")
    keys = records[["step", "loss", "group"]]
    repeated = keys.duplicated().to_numpy()
    if repeated.any():
        later = int(np.flatnonzero(repeated)[0])
        earlier = int(np.flatnonzero((keys == keys.iloc[later]).all(axis=1).to_numpy())[0])
        raise ValueError(f"{path} {_line(records, later)}: the same (step, loss, group) as line "
                         f"{int(records.index[earlier]) + 2}; a probe writes each cell once per step")
    numbers = {column: _numbers(path, records, column)
               for column in (*NORM_COLUMNS, "weight") if column in records.columns}
    for column in NORM_COLUMNS:
        if column in numbers:
            _refuse(path, records, numbers[column] < 0, column, "is a negative norm (a norm is >= 0)")
            records[column] = numbers[column]
    if "weight" in numbers:
        records["weight"] = numbers["weight"]
    if "reached" not in records.columns:
        return records
    reached = _reached(path, records)
    records["reached"] = reached
    norm = numbers["norm"]
    _refuse(path, records, ~reached & norm.notna(), "norm", "is a norm in a cell marked not reached")
    if "raw_norm" in numbers:
        raw = numbers["raw_norm"]
        _refuse(path, records, ~reached & raw.notna(), "raw_norm", "is a norm in a cell marked not reached")
        _refuse(path, records, reached & np.isfinite(norm) & ~np.isfinite(raw), "raw_norm",
                "is not finite, but norm is (norm = |weight| * raw_norm): the records were edited or damaged")
    explained = pd.Series(False, index=records.index)
    for column in ("raw_norm", "weight"):
        if column in numbers:
            explained |= ~np.isfinite(numbers[column])
    if "raw_norm" not in numbers:
        explained[:] = True  # nothing to check the norm against
    _refuse(path, records, reached & ~np.isfinite(norm) & ~explained, "norm",
            "is not finite, but raw_norm and weight are (|weight| * raw_norm cannot be): the records "
            "were edited or damaged")
    return records
