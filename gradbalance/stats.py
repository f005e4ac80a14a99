"""StepStats: the per-loss, per-group gradient norms of one probed step, and their records frames."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd

#: columns of :func:`records_frame` (``precond_norm`` is appended when measured)
RECORD_COLUMNS = ("step", "loss", "group", "weight", "value", "norm", "raw_norm")
#: columns of :func:`cosine_frame`
COSINE_COLUMNS = ("step", "group", "loss_a", "loss_b", "cosine")


@dataclass(frozen=True)
class StepStats:
    """Gradient statistics of one probed step.

    ``raw_norm[i, j] = ||dL_i/dθ_j||`` over the parameters θ_j of group j (NaN when loss i does not
    reach group j: *absent*, as opposed to a measured zero). The weighted norm is
    ``norm[i, j] = |w_i| raw_norm[i, j]``. ``precond_norm[i, j] = ||w_i g_ij / (sqrt(v̂) + ε)||`` is the
    optimizer-aware (Adam) norm, ``cosine[j, a, b]`` the cosine between w_a g_aj and w_b g_bj.
    """

    step: int
    losses: tuple[str, ...]
    groups: tuple[str, ...]
    values: np.ndarray  # (n_losses,) loss values
    weights: np.ndarray  # (n_losses,) loss weights
    raw_norm: np.ndarray  # (n_losses, n_groups)
    precond_norm: Optional[np.ndarray] = None  # (n_losses, n_groups)
    cosine: Optional[np.ndarray] = None  # (n_groups, n_losses, n_losses)

    @property
    def norm(self) -> np.ndarray:
        """Weighted norms ``|w_i| ||g_ij||`` (NaN where absent)."""
        return np.abs(self.weights)[:, None] * self.raw_norm

    def shares(self) -> np.ndarray:
        """Per-group shares ``norm_ij / sum_k norm_kj`` over the present losses (NaN where absent)."""
        norm = self.norm
        with np.errstate(invalid="ignore", divide="ignore"):
            return norm / np.nansum(norm, axis=0, keepdims=True)

    def rows(self) -> list[dict]:
        """One record per (loss, group), columns :data:`RECORD_COLUMNS` (+ ``precond_norm``)."""
        rows = []
        norm = self.norm
        for i, loss in enumerate(self.losses):
            for j, group in enumerate(self.groups):
                row = dict(step=self.step, loss=loss, group=group, weight=float(self.weights[i]),
                           value=float(self.values[i]), norm=float(norm[i, j]),
                           raw_norm=float(self.raw_norm[i, j]))
                if self.precond_norm is not None:
                    row["precond_norm"] = float(self.precond_norm[i, j])
                rows.append(row)
        return rows

    def cosine_rows(self) -> list[dict]:
        """One record per (group, unordered loss pair), columns :data:`COSINE_COLUMNS`."""
        if self.cosine is None:
            return []
        n = len(self.losses)
        return [dict(step=self.step, group=group, loss_a=self.losses[a], loss_b=self.losses[b],
                     cosine=float(self.cosine[j, a, b]))
                for j, group in enumerate(self.groups) for a in range(n) for b in range(a + 1, n)]


def records_frame(stats: Sequence[StepStats]) -> pd.DataFrame:
    """Long-format records of many steps: columns step, loss, group, weight, value, norm, raw_norm."""
    rows = [row for s in stats for row in s.rows()]
    columns = list(RECORD_COLUMNS)
    if any("precond_norm" in row for row in rows):
        columns.append("precond_norm")
    return pd.DataFrame(rows, columns=columns)


def cosine_frame(stats: Sequence[StepStats]) -> pd.DataFrame:
    """Long-format pairwise cosines of many steps: columns step, group, loss_a, loss_b, cosine."""
    return pd.DataFrame([row for s in stats for row in s.cosine_rows()], columns=list(COSINE_COLUMNS))

