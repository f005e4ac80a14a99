"""ContributionTable: each loss's share of the gradient reaching each module (ST-LIC, Table I).

For a probed step t, loss i and parameter group j with weighted norms n_ij(t) = ||w_i ∂L_i/∂θ_j||,

    share_ij(t) = n_ij(t) / sum_{k present in j} n_kj(t)

(a loss is *present* in j when its graph reaches a parameter of j). The table reports the mean and
the standard deviation (ddof=0) of share_ij(t) in percent over the last ``window`` probed steps,
rows = losses in the given order, columns = groups, ``-`` for absent cells. A (step, group) with a
non-finite norm or a zero total has no defined shares and is left out of that group's mean (the
other losses are not renormalised); such cells read ``non-finite`` or ``zero``.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import pandas as pd

from gradbalance.probe.reachability import describe_pairs
from gradbalance.probe.stats import ABSENT as ABSENT_STATE, MEASURED, NONFINITE, ZERO, reached_column

ABSENT = "-"
NONFINITE_CELL = "non-finite"
ZERO_CELL = "zero"


class WarmupOnlyError(ValueError):
    """Every probed step of an optimizer-aware table lies in Adam's warm-up."""


def past_warmup(build: Callable[[int], "ContributionTable"], warmup: int) -> "ContributionTable":
    """``build(warmup)``; when every probed step lies in Adam's warm-up, ``build(0)`` with a warning that
    says what those steps show (the CLI's short probes)."""
    try:
        return build(warmup)
    except WarmupOnlyError:
        warnings.warn(f"every probed step lies in Adam's first {warmup} steps: the optimizer-aware table shows "
                      "the warm-up, where the update is close to lr * sign(G) and the shares are dominated by "
                      "the entries where the losses' gradients cancel, not by their sizes; probe longer for the "
                      "trained regime", UserWarning)
        return build(0)


def step_shares(records: pd.DataFrame, column: str = "norm") -> pd.Series:
    """Per-step share (percent) of each record in its (step, group): NaN where the loss is absent, and
    in every cell of a (step, group) whose total is not finite or is zero (undefined, not renormalised)."""
    reached = reached_column(records, column)
    norm = records[column].astype(float).where(reached, 0.0)
    keys = [records["step"], records["group"]]
    total = norm.groupby(keys).transform("sum")  # pandas skips NaN here: non-finite is checked apart
    nonfinite = (~np.isfinite(norm)).groupby(keys).transform("any")
    defined = ~nonfinite & np.isfinite(total) & (total > 0)
    return (100.0 * norm / total.where(defined)).where(reached)


@dataclass(frozen=True)
class ContributionTable:
    """Mean ± std of per-step gradient shares, in percent (NaN = no defined share).

    ``reached`` says whether a loss reaches a group in any step (False: ``-``); ``nonfinite`` counts
    the steps where a gradient in the cell's group (this loss's or another's) was NaN/inf: those
    steps of the group are left out, not renormalised; a reached cell with no defined share and no non-finite step had
    an exactly zero gradient in every step of a group with zero total (``zero``).
    ``norms[t, l, g]`` / ``step_reached[t, l, g]`` are the per-step norms the shares come from
    (``derive_coefficients`` fits them).
    """

    mean: pd.DataFrame  # index = losses, columns = groups
    std: pd.DataFrame
    weights: pd.Series  # mean weight of each loss over the window
    steps: tuple[int, ...]  # the probed steps averaged
    column: str = "norm"  # records column the shares were computed from
    reached: Optional[pd.DataFrame] = None  # bool, default: mean not NaN
    nonfinite: Optional[pd.DataFrame] = None  # int counts, default: 0
    norms: Optional[np.ndarray] = None  # (steps, losses, groups)
    step_reached: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        if self.reached is None:
            object.__setattr__(self, "reached", self.mean.notna())
        if self.nonfinite is None:
            object.__setattr__(self, "nonfinite", pd.DataFrame(0, index=self.mean.index, columns=self.mean.columns))

    @classmethod
    def from_records(cls, records: pd.DataFrame, *, window: Optional[int] = None,
                     loss_order: Sequence[str] = (), group_order: Sequence[str] = (),
                     column: str = "norm", warmup: int = 0) -> "ContributionTable":
        """Build the table from a records frame (``GradientProbe.records`` or a saved records.csv).

        Steps where ``column`` was not measured at all (all NaN and no cell reached, e.g.
        optimizer-aware norms of a step whose optimizer step was skipped) are left out, and so are,
        for ``precond_norm``, steps measured at Adam steps ``1..warmup`` (records with ``adam_step``).
        """
        required = {"step", "loss", "group", "weight", column}
        missing = required - set(records.columns)
        if missing:
            raise ValueError(f"records lack column(s) {sorted(missing)}; have {list(records.columns)}")
        data = records.copy()
        data["reached"] = reached_column(data, column)
        negative = data[column].astype(float) < 0
        if negative.any():
            row = data[negative].iloc[0]
            raise ValueError(f"records hold a negative {column} {row[column]!r} (step {row['step']} loss "
                             f"{row['loss']!r} group {row['group']!r}); a norm is >= 0")
        if data["step"].isna().any():
            raise ValueError("records hold a record without a step number")
        if column != "norm":  # e.g. precond_norm: a step without a value in any cell was not measured
            measured = data.groupby("step")[column].transform(lambda s: s.notna().any())
            data = data[measured]
        if data.empty:
            raise ValueError("no probed steps in the records" + ("" if column == "norm" else f" with {column}"))
        if warmup and column == "precond_norm" and "adam_step" in data.columns:
            late = ~(data["adam_step"].astype(float) <= warmup)  # NaN (not recorded): kept
            if not late.any():
                raise WarmupOnlyError(f"all {data['step'].nunique()} probed steps are in Adam's first {warmup} steps "
                                 "(warm-up, skipped by default); probe longer or pass warmup=0")
            data = data[late]
        if window is not None and window < 1:
            raise ValueError(f"window must be a positive number of probed steps, got {window}")
        duplicated = data.duplicated(["step", "loss", "group"])
        if duplicated.any():
            row = data[duplicated].iloc[0]
            raise ValueError(f"records hold step {row['step']} loss {row['loss']!r} group {row['group']!r} "
                             "more than once")
        steps = np.sort(data["step"].unique())
        steps = steps[-window:] if window else steps
        data = data[data["step"].isin(steps)].copy()
        data["share"] = step_shares(data, column)
        losses = _order(loss_order, data["loss"])
        groups = _order(group_order, data["group"])
        cells = data.groupby(["loss", "group"])
        mean = cells["share"].mean().unstack("group").reindex(index=losses, columns=groups)
        std = cells["share"].agg(lambda s: s.std(ddof=0)).unstack("group").reindex(index=losses, columns=groups)
        reached = cells["reached"].any().unstack("group").reindex(index=losses, columns=groups)
        bad = data["reached"] & ~np.isfinite(data[column].astype(float))
        bad = data["reached"] & bad.groupby([data["step"], data["group"]]).transform("any")
        nonfinite = bad.groupby([data["loss"], data["group"]]).sum().unstack("group")
        nonfinite = nonfinite.reindex(index=losses, columns=groups).fillna(0).astype(int)
        weights = data.groupby(["loss", "step"])["weight"].first().groupby("loss").mean().reindex(losses)
        for frame in (mean, std, reached, nonfinite):
            frame.index.name, frame.columns.name = "loss", "group"
        cube = data.set_index(["step", "loss", "group"])
        index = pd.MultiIndex.from_product([steps, losses, groups])
        norms = cube[column].astype(float).reindex(index).to_numpy().reshape(len(steps), len(losses), len(groups))
        step_reached = cube["reached"].reindex(index).fillna(False).to_numpy(dtype=bool).reshape(norms.shape)
        return cls(mean=mean, std=std, weights=weights, steps=tuple(int(s) for s in steps), column=column,
                   reached=reached.fillna(False).astype(bool), nonfinite=nonfinite, norms=norms,
                   step_reached=step_reached)

    @property
    def losses(self) -> tuple[str, ...]:
        return tuple(self.mean.index)

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(self.mean.columns)

    def cell(self, loss: str, group: str, decimals: int = 1) -> str:
        """``"12.3 ± 0.4"`` (percent); ``-`` when the loss does not reach the group, ``non-finite``
        when the group had a NaN/inf gradient in every step, ``zero`` when it reached the group with an
        exactly zero gradient in a group with no gradient at all; ``(k non-finite)`` is appended
        when k steps were non-finite."""
        mean = self.mean.loc[loss, group]
        bad = int(self.nonfinite.loc[loss, group])
        if not self.reached.loc[loss, group]:
            return ABSENT
        if np.isnan(mean):
            return NONFINITE_CELL if bad else ZERO_CELL
        text = f"{mean:.{decimals}f} ± {self.std.loc[loss, group]:.{decimals}f}"
        return f"{text} ({bad} non-finite)" if bad else text

    def state(self, loss: str, group: str) -> str:
        """``absent``, ``nonfinite`` (no finite step), ``zero`` (no defined share) or ``measured``."""
        if not self.reached.loc[loss, group]:
            return ABSENT_STATE
        if np.isnan(self.mean.loc[loss, group]):
            return NONFINITE if self.nonfinite.loc[loss, group] else ZERO
        return MEASURED

    def to_frame(self, decimals: int = 1) -> pd.DataFrame:
        """The Table I layout as strings: rows = losses, columns = groups."""
        cells = [[self.cell(loss, group, decimals) for group in self.groups] for loss in self.losses]
        return pd.DataFrame(cells, index=pd.Index(self.losses, name="loss"), columns=list(self.groups))

    @property
    def no_path(self) -> tuple[tuple[str, str], ...]:
        """``(loss, group)`` pairs with no path in any averaged step (the ``-`` cells)."""
        return tuple((loss, group) for loss in self.losses for group in self.groups if not self.reached.loc[loss, group])

    def notes(self) -> str:
        """What the table averages and which cells have no path, e.g. ``mean ± std over 50 probed steps
        (10-500); -: no path from bpp to g_s``."""
        span = f"{self.steps[0]}-{self.steps[-1]}" if len(self.steps) > 1 else f"{self.steps[0]}"
        text = f"mean ± std over {len(self.steps)} probed step{'s' if len(self.steps) != 1 else ''} ({span})"
        return text + (f"; -: no path from {describe_pairs(self.no_path)}" if self.no_path else "")

    def to_markdown(self, decimals: int = 1, notes: bool = True) -> str:
        """GitHub-flavoured markdown table of the shares in percent, with :meth:`notes` below it."""
        frame = self.to_frame(decimals)
        lines = ["| loss | " + " | ".join(frame.columns) + " |",
                 "|---|" + "---:|" * len(frame.columns)]
        lines += [f"| {loss} | " + " | ".join(row) + " |" for loss, row in zip(frame.index, frame.values)]
        if notes:
            lines += ["", self.notes()]
        return "\n".join(lines)

    def to_latex(self, decimals: int = 1, caption: Optional[str] = None) -> str:
        """A booktabs ``tabular`` (inside a ``table`` when ``caption`` is given)."""
        frame = self.to_frame(decimals).replace(to_replace=r" ± ", value=r" $\\pm$ ", regex=True)
        body = [r"\begin{tabular}{l" + "c" * len(frame.columns) + "}", r"\toprule",
                "Loss & " + " & ".join(_latex_escape(g) for g in frame.columns) + r" \\", r"\midrule"]
        body += [_latex_escape(loss) + " & " + " & ".join(row) + r" \\" for loss, row in zip(frame.index, frame.values)]
        body += [r"\bottomrule", r"\end{tabular}"]
        if caption is None:
            return "\n".join(body)
        return "\n".join([r"\begin{table}[t]", r"\centering", rf"\caption{{{caption}}}", *body, r"\end{table}"])

    def to_csv(self, path: Union[str, Path, None] = None, decimals: int = 1) -> str:
        """CSV in the Table I layout (string cells); written to ``path`` when given."""
        text = self.to_frame(decimals).to_csv()
        if path is not None:
            Path(path).write_text(text)
        return text

    def __str__(self) -> str:
        return self.to_markdown()


def _order(preferred: Sequence[str], present: pd.Series) -> list[str]:
    """``preferred`` names that occur, then the other names in order of first appearance."""
    seen = list(dict.fromkeys(present))
    return [n for n in preferred if n in seen] + [n for n in seen if n not in preferred]


def _latex_escape(text: str) -> str:
    return str(text).replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")
