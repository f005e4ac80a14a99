"""Figures of a probe run: share heatmap, stacked bars per group, shares over training steps.

matplotlib (and seaborn, which imports pyplot) are imported on the first plot, not at import, and the
backend stays the user's: only when none was chosen (no ``MPLBACKEND``, no ``backend`` in a
matplotlibrc, pyplot not yet imported) is the non-interactive ``Agg`` selected, since these figures
are only ever written to files.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from gradbalance.probe.stats import MEASURED, NONFINITE, ZERO, reached_column
from gradbalance.report.table import ContributionTable, step_shares

if TYPE_CHECKING:
    import matplotlib.figure


def pyplot():
    """``matplotlib.pyplot``, with ``Agg`` selected first when no backend was chosen."""
    if "matplotlib.pyplot" not in sys.modules and not os.environ.get("MPLBACKEND"):
        import matplotlib

        chosen = getattr(matplotlib.rcParams, "_get_backend_or_none", lambda: "unknown")()
        if chosen is None:  # still matplotlib's "auto" sentinel: nobody picked a backend
            matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _seaborn():
    pyplot()  # seaborn imports pyplot: choose the backend first
    import seaborn as sns

    return sns


def plot_heatmap(table: ContributionTable, path: Path, title: str = "gradient share (%)") -> Path:
    """Heatmap of the mean shares, cells annotated as in the table (``mean ± std``, ``-`` absent,
    ``non-finite``, ``zero``)."""
    fig, ax = pyplot().subplots(figsize=(1.6 + 1.6 * len(table.groups), 0.8 + 0.5 * len(table.losses)))
    _seaborn().heatmap(table.mean, annot=table.to_frame(), fmt="", vmin=0, vmax=100,
                cmap="viridis", cbar_kws={"label": "%"}, ax=ax)
    cells = table.to_frame()
    for r, loss in enumerate(table.losses):  # seaborn leaves NaN cells blank: say why they are
        for c, group in enumerate(table.groups):
            if np.isnan(table.mean.loc[loss, group]):
                ax.text(c + 0.5, r + 0.5, cells.loc[loss, group], ha="center", va="center", color="gray")
    ax.set_title(title)
    return _save(fig, path)


def plot_stacked_bars(table: ContributionTable, path: Path, title: str = "gradient share per group") -> Path:
    """One bar per group, stacked by loss (absent losses contribute nothing)."""
    fig, ax = pyplot().subplots(figsize=(2 + 1.2 * len(table.groups), 3.5))
    table.mean.fillna(0).T.plot.bar(stacked=True, ax=ax, colormap="tab10", rot=0)
    ax.set_ylabel("share (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(title="loss", bbox_to_anchor=(1.02, 1), loc="upper left")
    return _save(fig, path)


def shares_over_steps(records: pd.DataFrame, column: str = "norm") -> pd.DataFrame:
    """Per-step shares (percent) with each record's state: ``measured``/``zero`` (a share, 0 for a zero
    gradient), ``nonfinite`` (no share: the group had a NaN/inf gradient), or ``undefined`` (the
    group's total was zero). Absent records are dropped."""
    data = records.copy()
    data["reached"] = reached_column(data, column)
    data = data[data["reached"]].copy()
    data["share"] = step_shares(data, column)
    finite = np.isfinite(data[column].astype(float))
    group_bad = (~finite).groupby([data["step"], data["group"]]).transform("any")
    data["state"] = np.where(group_bad, NONFINITE, np.where(data["share"].isna(), "undefined",
                                                            np.where(data[column] == 0, ZERO, MEASURED)))
    return data


def plot_shares_over_steps(records: pd.DataFrame, path: Path, *, column: str = "norm",
                           loss_order: Sequence[str] = (), group_order: Sequence[str] = ()) -> Path:
    """Per-step share of each loss (one panel per group) across the probed steps; steps whose group
    had a non-finite gradient are marked with a red ``x`` at the top of the panel (no share)."""
    data = shares_over_steps(records, column)
    groups = [g for g in group_order if g in set(data["group"])] or list(dict.fromkeys(data["group"]))
    losses = [l for l in loss_order if l in set(data["loss"])] or list(dict.fromkeys(data["loss"]))
    lines = data.dropna(subset=["share"])
    grid = _seaborn().relplot(data=lines, x="step", y="share", hue="loss", hue_order=losses, col="group",
                       col_order=groups, kind="line", height=3, aspect=1.3, facet_kws={"sharey": True})
    for group, ax in grid.axes_dict.items():
        bad = sorted(set(data.loc[(data["group"] == group) & (data["state"] == NONFINITE), "step"]))
        if bad:
            ax.scatter(bad, [100.0] * len(bad), marker="x", color="red", label="non-finite", zorder=3)
            ax.legend(loc="lower right", fontsize="small")
    grid.set_axis_labels("training step", "share (%)")
    return _save(grid.figure, path)


def save_plots(records: pd.DataFrame, table: ContributionTable, out_dir: Path, prefix: str = "") -> list[Path]:
    """All three figures as PNG files under ``out_dir`` (names prefixed by ``prefix``)."""
    out_dir = Path(out_dir)
    label = "optimizer-aware " if table.column == "precond_norm" else ""
    return [
        plot_heatmap(table, out_dir / f"{prefix}heatmap.png", f"{label}gradient share (%)"),
        plot_stacked_bars(table, out_dir / f"{prefix}stacked.png", f"{label}gradient share per group"),
        plot_shares_over_steps(records, out_dir / f"{prefix}shares_over_steps.png", column=table.column,
                               loss_order=table.losses, group_order=table.groups),
    ]


def _save(fig: matplotlib.figure.Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    pyplot().close(fig)
    return path
