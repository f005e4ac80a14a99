"""A probe run on disk: ``records.csv``, ``cosine.csv``, ``run.json`` and the tables written from them."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pandas as pd

from gradbalance.table import ContributionTable

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
        metadata = json.loads((path / METADATA).read_text()) if (path / METADATA).is_file() else {}
        return cls(path=path, records=pd.read_csv(path / RECORDS), metadata=metadata)

    @property
    def has_precond(self) -> bool:
        return "precond_norm" in self.records.columns and self.records["precond_norm"].notna().any()

    def table(self, window: Optional[int] = None, precond: bool = False) -> ContributionTable:
        """Table I of the run (optimizer-aware when ``precond``), in the run's loss/group order."""
        if precond and not self.has_precond:
            raise ValueError(f"{self.path} has no optimizer-aware norms (the target's optimizer was not Adam/AdamW)")
        return ContributionTable.from_records(
            self.records, window=window, loss_order=self.metadata.get("loss_order", ()),
            group_order=self.metadata.get("groups", ()), column="precond_norm" if precond else "norm")


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
    records.to_csv(path / RECORDS, index=False)
    if not cosines.empty:
        cosines.to_csv(path / COSINES, index=False)
    (path / METADATA).write_text(json.dumps(metadata, indent=2, default=str))
    return path


def write_tables(table: ContributionTable, path: Path, stem: str = "table") -> list[Path]:
    """``<stem>.md``, ``<stem>.csv`` and ``<stem>.tex`` of ``table`` under ``path``."""
    caption = ("Share of each loss in the gradient reaching each module (%, mean $\\pm$ std over "
               f"{len(table.steps)} probed steps)")
    files = [path / f"{stem}.md", path / f"{stem}.csv", path / f"{stem}.tex"]
    files[0].write_text(table.to_markdown() + "\n")
    table.to_csv(files[1])
    files[2].write_text(table.to_latex(caption=caption) + "\n")
    return files
