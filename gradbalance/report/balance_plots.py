"""Figures of a balanced run: loss coefficients over steps, and each share against its target.

Drawn by ``gradbalance plot RUN`` when the run's weights change over steps (a :class:`Balancer`
history saved with :meth:`Balancer.save`, or any probe run whose weights vary).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from gradbalance.report.plots import _save, pyplot


def weights_vary(records: pd.DataFrame) -> bool:
    """Whether some loss's coefficient (``coefficient`` column, else ``weight``) changes over steps."""
    column = "coefficient" if "coefficient" in records.columns else "weight"
    return bool((records.groupby("loss")[column].nunique() > 1).any())


def plot_weights_over_steps(records: pd.DataFrame, path: Path, loss_order: Sequence[str] = ()) -> Path:
    """Each loss's coefficient against the step (log scale)."""
    column = "coefficient" if "coefficient" in records.columns else "weight"
    per_step = records.groupby(["step", "loss"])[column].first().unstack("loss")
    per_step = per_step[[l for l in loss_order if l in per_step.columns] or list(per_step.columns)]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    per_step.abs().plot(ax=ax, logy=True, color=list(plt.get_cmap("tab10").colors[:per_step.shape[1]]))
    ax.set_xlabel("training step")
    ax.set_ylabel(f"|{column}| (log scale)")
    ax.set_title("loss coefficients over steps")
    ax.legend(title="loss", bbox_to_anchor=(1.02, 1), loc="upper left")
    return _save(fig, path)


def plot_shares_against_targets(records: pd.DataFrame, path: Path, *, loss_order: Sequence[str] = (),
                                group_order: Sequence[str] = (), column: str = "norm") -> Path:
    """One panel per group: measured share (%) of each loss per probed step, dashed: its target."""
    data = records.copy()
    data["share"] = 100.0 * data[column] / data.groupby(["step", "group"])[column].transform("sum")
    groups = [g for g in group_order if g in set(data.group)] or list(dict.fromkeys(data.group))
    losses = [l for l in loss_order if l in set(data.loss)] or list(dict.fromkeys(data.loss))
    plt = pyplot()
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.4), sharey=True, squeeze=False)
    colors = dict(zip(losses, plt.get_cmap("tab10").colors))
    for ax, group in zip(axes[0], groups):
        for loss in losses:
            cell = data[(data.group == group) & (data.loss == loss)].dropna(subset=["share"])
            if cell.empty:
                continue
            ax.plot(cell.step, cell.share, color=colors[loss], label=loss, linewidth=1)
            if "target_low" in cell.columns and cell.target_low.notna().any():
                ax.plot(cell.step, cell.target_low, color=colors[loss], linestyle="--", linewidth=1)
                if (cell.target_high != cell.target_low).any():
                    ax.plot(cell.step, cell.target_high, color=colors[loss], linestyle="--", linewidth=1)
        ax.set_title(group)
        ax.set_xlabel("training step")
    axes[0][0].set_ylabel("share (%), dashed: target")
    drawn = [l for l in losses if data[(data.loss == l)].share.notna().any()]
    handles = [plt.Line2D([], [], color=colors[l], label=l) for l in drawn]
    axes[0][-1].legend(handles=handles, title="loss", bbox_to_anchor=(1.02, 1), loc="upper left")
    return _save(fig, path)


def save_balance_plots(records: pd.DataFrame, out_dir: Path, loss_order: Sequence[str] = (),
                       group_order: Sequence[str] = ()) -> list[Path]:
    """``weights_over_steps.png`` and ``shares_vs_targets.png`` under ``out_dir``; none if the weights never change."""
    if not weights_vary(records):
        return []
    out_dir = Path(out_dir)
    return [plot_weights_over_steps(records, out_dir / "weights_over_steps.png", loss_order),
            plot_shares_against_targets(records, out_dir / "shares_vs_targets.png", loss_order=loss_order,
                                        group_order=group_order)]
