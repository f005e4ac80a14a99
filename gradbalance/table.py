"""ContributionTable: each loss's share of the gradient reaching each module (ST-LIC, Table I).

For a probed step t, loss i and parameter group j with weighted norms n_ij(t) = ||w_i ∂L_i/∂θ_j||,

    share_ij(t) = n_ij(t) / sum_{k present in j} n_kj(t)

(a loss is *present* in j when its graph reaches a parameter of j). The table reports the mean and
the standard deviation (ddof=0) of share_ij(t) in percent over the last ``window`` probed steps,
rows = losses in the given order, columns = groups, ``-`` for absent cells.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import pandas as pd

ABSENT = "-"


@dataclass(frozen=True)
class ContributionTable:
    """Mean ± std of per-step gradient shares, in percent (NaN = absent)."""

    mean: pd.DataFrame  # index = losses, columns = groups
    std: pd.DataFrame
    weights: pd.Series  # mean weight of each loss over the window
    steps: tuple[int, ...]  # the probed steps averaged
    column: str = "norm"  # records column the shares were computed from

    @classmethod
    def from_records(cls, records: pd.DataFrame, *, window: Optional[int] = None,
                     loss_order: Sequence[str] = (), group_order: Sequence[str] = (),
                     column: str = "norm") -> "ContributionTable":
        """Build the table from a records frame (``GradientProbe.records`` or a saved records.csv)."""
        required = {"step", "loss", "group", "weight", column}
        missing = required - set(records.columns)
        if missing:
            raise ValueError(f"records lack column(s) {sorted(missing)}; have {list(records.columns)}")
        if records.empty:
            raise ValueError("no probed steps in the records")
        if window is not None and window < 1:
            raise ValueError(f"window must be a positive number of probed steps, got {window}")
        steps = np.sort(records["step"].unique())
        steps = steps[-window:] if window else steps
        data = records[records["step"].isin(steps)].copy()
        totals = data.groupby(["step", "group"])[column].transform(lambda s: s.sum(min_count=1))
        data["share"] = 100.0 * data[column] / totals.where(totals > 0)
        losses = _order(loss_order, data["loss"])
        groups = _order(group_order, data["group"])
        stats = data.groupby(["loss", "group"])["share"].agg(["mean", lambda s: s.std(ddof=0)])
        stats.columns = ["mean", "std"]
        mean = stats["mean"].unstack("group").reindex(index=losses, columns=groups)
        std = stats["std"].unstack("group").reindex(index=losses, columns=groups)
        weights = data.groupby(["loss", "step"])["weight"].first().groupby("loss").mean().reindex(losses)
        for frame in (mean, std):
            frame.index.name, frame.columns.name = "loss", "group"
        return cls(mean=mean, std=std, weights=weights, steps=tuple(int(s) for s in steps), column=column)

    @property
    def losses(self) -> tuple[str, ...]:
        return tuple(self.mean.index)

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(self.mean.columns)

    def cell(self, loss: str, group: str, decimals: int = 1) -> str:
        """``"12.3 ± 0.4"`` (percent), or ``-`` when the loss does not reach the group."""
        mean = self.mean.loc[loss, group]
        if np.isnan(mean):
            return ABSENT
        return f"{mean:.{decimals}f} ± {self.std.loc[loss, group]:.{decimals}f}"

    def to_frame(self, decimals: int = 1) -> pd.DataFrame:
        """The Table I layout as strings: rows = losses, columns = groups."""
        cells = [[self.cell(loss, group, decimals) for group in self.groups] for loss in self.losses]
        return pd.DataFrame(cells, index=pd.Index(self.losses, name="loss"), columns=list(self.groups))

    def to_markdown(self, decimals: int = 1) -> str:
        """GitHub-flavoured markdown table of the shares in percent."""
        frame = self.to_frame(decimals)
        lines = ["| loss | " + " | ".join(frame.columns) + " |",
                 "|---|" + "---:|" * len(frame.columns)]
        lines += [f"| {loss} | " + " | ".join(row) + " |" for loss, row in zip(frame.index, frame.values)]
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
