"""A probe run on disk: ``records.csv``, ``cosine.csv``, ``run.json`` and the tables written from them.

Files are written atomically (:func:`gradbalance.io.atomic.atomic_write_text`). A ``records.csv`` cut
short (a killed probe, a partial copy) is read with a warning saying what is missing: a last line
cut mid-record and a last step with fewer records than the others are dropped, and fewer probed
steps than ``run.json`` promises (``ceil(steps / every)``) is reported. Damaged records (a NaN
step, a negative or edited norm, a cell twice) are an error naming the file, line and column
(:mod:`gradbalance.io.record_checks`).
"""
from __future__ import annotations

import io
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import pandas as pd

from gradbalance.io.atomic import atomic_write_text
from gradbalance.io.record_checks import validate_records

if TYPE_CHECKING:  # annotations only: gradbalance.io imports nothing of the probe or the report at run time
    from gradbalance.report.table import ContributionTable

RECORDS = "records.csv"
COSINES = "cosine.csv"
METADATA = "run.json"


@dataclass(frozen=True)
class ProbeRun:
    """The saved records and metadata of one ``gradbalance probe`` run."""

    path: Path
    records: pd.DataFrame
    metadata: dict

    @classmethod
    def load(cls, path: str | Path) -> "ProbeRun":
        """Read a run directory (clear error when it is not one)."""
        path = Path(path)
        if not (path / RECORDS).is_file():
            raise FileNotFoundError(f"{path} is not a probe run: {RECORDS} is missing")
        try:
            metadata = json.loads((path / METADATA).read_text()) if (path / METADATA).is_file() else {}
        except ValueError as error:
            raise ValueError(f"{path / METADATA} is not valid JSON ({error})") from None
        return cls(path=path, records=_read_records(path / RECORDS, metadata), metadata=metadata)

    @property
    def has_precond(self) -> bool:
        return "precond_norm" in self.records.columns and self.records["precond_norm"].notna().any()

    def table(self, window: Optional[int] = None, precond: bool = False,
              warmup: Optional[int] = None) -> ContributionTable:
        """Table I of the run in the run's loss/group order; optimizer-aware when ``precond``, without
        Adam's first ``warmup`` steps (default :data:`gradbalance.probe.stats.ADAM_WARMUP`), unless the run
        holds nothing else (then with a warning saying what those steps show:
        :func:`gradbalance.report.table.past_warmup`). Imports the report on first use."""
        from gradbalance.probe.stats import ADAM_WARMUP
        from gradbalance.report.table import ContributionTable, past_warmup

        warmup = ADAM_WARMUP if warmup is None else warmup
        if precond and not self.has_precond:
            raise ValueError(f"{self.path} has no optimizer-aware norms (the target's optimizer was not Adam/AdamW)")

        def build(skip: int) -> ContributionTable:
            return ContributionTable.from_records(
                self.records, window=window, loss_order=self.metadata.get("loss_order", ()),
                group_order=self.metadata.get("groups", ()), column="precond_norm" if precond else "norm",
                warmup=skip)

        return past_warmup(build, warmup) if precond else build(0)


def _read_records(path: Path, metadata: dict) -> pd.DataFrame:
    """``records.csv`` without the incomplete tail of a truncated file, with a warning naming what is missing."""
    text = path.read_text()
    problems = []
    if text and not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]
        problems.append("its last line is cut mid-record (dropped)")
    try:
        records = pd.read_csv(io.StringIO(text))
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise ValueError(f"{path} is not a records table ({' '.join(str(error).split())})") from None
    missing = {"step", "loss", "group", "norm"} - set(records.columns)
    if missing:
        raise ValueError(f"{path} lacks the column(s) {sorted(missing)}")
    records = validate_records(records, path)
    if not records.empty:
        counts = records.groupby("step").size()
        if counts.iloc[-1] < counts.max():
            problems.append(f"its last step {counts.index[-1]} has {counts.iloc[-1]} of {counts.max()} records (dropped)")
            records = records[records["step"] != counts.index[-1]].reset_index(drop=True)
    steps, every = metadata.get("steps"), metadata.get("every")
    if isinstance(steps, int) and isinstance(every, int) and every > 0:
        expected, found = math.ceil(steps / every), records["step"].nunique()
        if found < expected:
            problems.append(f"it holds {found} of the {expected} probed steps {METADATA} promises")
    if problems:
        warnings.warn(f"{path} looks truncated: " + "; ".join(problems), stacklevel=3)
    return records


def latest_run(path: str | Path) -> Path:
    """``path`` when it is a run directory, else its most recently created run subdirectory.

    ``gradbalance probe`` writes each run into a new subdirectory of its output root (for
    ``--model stlic``: ``reports/table1/``), so notebooks and reports can point at the root.
    """
    path = Path(path)
    if (path / RECORDS).is_file():
        return path
    runs = [child for child in path.glob("*/") if (child / RECORDS).is_file()] if path.is_dir() else []
    if not runs:
        raise FileNotFoundError(f"{path} is neither a probe run nor a folder of probe runs ({RECORDS} missing)")
    return max(runs, key=lambda run: ((run / METADATA).stat().st_mtime if (run / METADATA).is_file() else 0, run.name))


def save_run(path: Path, records: pd.DataFrame, cosines: pd.DataFrame, metadata: dict) -> Path:
    """Write records (and cosines when any) and the metadata into ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path / RECORDS, records.to_csv(index=False))
    if not cosines.empty:
        atomic_write_text(path / COSINES, cosines.to_csv(index=False))
    atomic_write_text(path / METADATA, json.dumps(metadata, indent=2, default=str))
    return path


def write_tables(table: ContributionTable, path: Path, stem: str = "table") -> list[Path]:
    """``<stem>.md``, ``<stem>.csv`` and ``<stem>.tex`` of ``table`` under ``path``."""
    caption = ("Share of each loss in the gradient reaching each module (%, mean $\\pm$ std over "
               f"{len(table.steps)} probed steps)")
    files = [path / f"{stem}.md", path / f"{stem}.csv", path / f"{stem}.tex"]
    atomic_write_text(files[0], table.to_markdown() + "\n")
    atomic_write_text(files[1], table.to_csv())
    atomic_write_text(files[2], table.to_latex(caption=caption) + "\n")
    return files
