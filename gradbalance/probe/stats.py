"""StepStats: the per-loss, per-group gradient norms of one probed step, and their records frames.

Each (loss, group) cell of a step is in one of four states, kept apart everywhere (records,
tables, plots):

* ``absent``: the loss has no path to the group (``reached`` is False, norms NaN);
* ``nonfinite``: the gradient has a NaN or inf entry (``reached``, norm NaN or inf);
* ``zero``: the gradient exists and is exactly zero (``reached``, norm 0);
* ``measured``: a finite, positive norm.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd

#: columns of :func:`records_frame` (``precond_norm`` is appended when measured)
RECORD_COLUMNS = ("step", "loss", "group", "weight", "value", "norm", "raw_norm", "reached")
#: columns of :func:`cosine_frame`
COSINE_COLUMNS = ("step", "group", "loss_a", "loss_b", "cosine")

ABSENT, NONFINITE, ZERO, MEASURED = "absent", "nonfinite", "zero", "measured"

#: Adam steps at the start of training that optimizer-aware tables skip by default (``warmup``): at
#: step 1 the update is ``lr * sign(G)``: shares are dominated by entries where the losses cancel
ADAM_WARMUP = 10


def cell_state(norm: float, reached: bool) -> str:
    """One of :data:`ABSENT`, :data:`NONFINITE`, :data:`ZERO`, :data:`MEASURED`."""
    if not reached:
        return ABSENT
    if not np.isfinite(norm):
        return NONFINITE
    return ZERO if norm == 0 else MEASURED


@dataclass
class StepStats:
    """Gradient statistics of one probed step.

    ``raw_norm[i, j] = ||dL_i/dθ_j||`` over the parameters θ_j of group j; ``reached[i, j]`` says
    whether loss i has a path to group j (NaN norm and False when *absent*; a NaN or inf norm with
    True is a *non-finite* gradient). The weighted norm is ``norm[i, j] = |w_i| raw_norm[i, j]``.
    ``precond_norm[i, j] = ||w_i g_ij / (sqrt(v̂) + ε)||`` is the optimizer-aware (Adam) norm, set
    when the optimizer steps (see :class:`gradbalance.GradientProbe`); ``cosine[j, a, b]`` the
    cosine between w_a g_aj and w_b g_bj.
    """

    step: int
    losses: tuple[str, ...]
    groups: tuple[str, ...]
    values: np.ndarray  # (n_losses,) loss values
    weights: np.ndarray  # (n_losses,) loss weights
    raw_norm: np.ndarray  # (n_losses, n_groups)
    reached: Optional[np.ndarray] = None  # (n_losses, n_groups) bool; None: wherever raw_norm is not NaN
    precond_norm: Optional[np.ndarray] = None  # (n_losses, n_groups)
    adam_step: Optional[int] = None  # the optimizer step precond_norm was measured at (1 = Adam's first)
    cosine: Optional[np.ndarray] = None  # (n_groups, n_losses, n_losses)

    def __post_init__(self) -> None:
        if self.reached is None:
            self.reached = ~np.isnan(self.raw_norm)

    @property
    def norm(self) -> np.ndarray:
        """Weighted norms ``|w_i| ||g_ij||`` (NaN where absent)."""
        return np.abs(self.weights)[:, None] * self.raw_norm

    def norm_of(self, loss: str, group: str, *, weighted: bool = True, precond: bool = False) -> float:
        """One cell: ``||w_loss dL_loss/dθ_group||`` (``weighted=False``: without ``|w|``; ``precond``:
        the optimizer-aware norm). NaN when the loss does not reach the group."""
        for kind, names, name in (("loss", self.losses, loss), ("group", self.groups, group)):
            if name not in names:
                raise KeyError(f"no {kind} {name!r} in step {self.step}; have {list(names)}")
        i, j = self.losses.index(loss), self.groups.index(group)
        if precond:
            if self.precond_norm is None:
                raise ValueError(f"step {self.step} has no optimizer-aware norms (no optimizer, or it has "
                                 "not stepped yet)")
            return float(self.precond_norm[i, j])
        return float(self.norm[i, j] if weighted else self.raw_norm[i, j])

    def state_of(self, loss: str, group: str) -> str:
        """The cell's state: ``absent``, ``nonfinite``, ``zero`` or ``measured``."""
        i, j = self.losses.index(loss), self.groups.index(group)
        return cell_state(float(self.raw_norm[i, j]), bool(self.reached[i, j]))

    def shares(self) -> np.ndarray:
        """Per-group shares ``norm_ij / sum_k norm_kj`` over the present losses.

        NaN where absent, and in a whole group whose total is not finite or is zero (undefined:
        the other losses are not renormalised to 100 %).
        """
        norm = np.where(self.reached, self.norm, 0.0)
        total = norm.sum(axis=0, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            shares = norm / np.where(np.isfinite(total) & (total > 0), total, np.nan)
        return np.where(self.reached, shares, np.nan)

    def rows(self) -> list[dict]:
        """One record per (loss, group), columns :data:`RECORD_COLUMNS` (+ ``precond_norm``)."""
        rows = []
        norm = self.norm
        for i, loss in enumerate(self.losses):
            for j, group in enumerate(self.groups):
                row = dict(step=self.step, loss=loss, group=group, weight=float(self.weights[i]),
                           value=float(self.values[i]), norm=float(norm[i, j]),
                           raw_norm=float(self.raw_norm[i, j]), reached=bool(self.reached[i, j]))
                if self.precond_norm is not None:
                    row["precond_norm"] = float(self.precond_norm[i, j])
                    row["adam_step"] = self.adam_step if self.adam_step is not None else np.nan
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
    """Long-format records of many steps: columns :data:`RECORD_COLUMNS` (+ ``precond_norm``)."""
    rows = [row for s in stats for row in s.rows()]
    columns = list(RECORD_COLUMNS)
    if any("precond_norm" in row for row in rows):
        columns += ["precond_norm", "adam_step"]
    return pd.DataFrame(rows, columns=columns)


def reached_column(records: pd.DataFrame, column: str = "norm") -> pd.Series:
    """The ``reached`` flags of records (runs saved before the column existed: ``column`` not NaN).

    For ``precond_norm`` a NaN also means no path: the loss reaches only parameters the optimizer
    does not hold (a NaN gradient is flagged as non-finite by the raw norm)."""
    if "reached" not in records.columns:
        return records[column].notna()
    reached = records["reached"].astype(bool)
    return reached & records[column].notna() if column == "precond_norm" else reached


def cosine_frame(stats: Sequence[StepStats]) -> pd.DataFrame:
    """Long-format pairwise cosines of many steps: columns step, group, loss_a, loss_b, cosine."""
    return pd.DataFrame([row for s in stats for row in s.cosine_rows()], columns=list(COSINE_COLUMNS))


def stats_from_records(records: pd.DataFrame) -> list[StepStats]:
    """The :class:`StepStats` of each step of a records frame (inverse of :func:`records_frame`; cosines
    are not part of the records)."""
    out = []
    for step, rows in records.groupby("step", sort=True):
        losses = tuple(dict.fromkeys(rows["loss"]))
        groups = tuple(dict.fromkeys(rows["group"]))
        cube = rows.set_index(["loss", "group"]).reindex(pd.MultiIndex.from_product([losses, groups]))
        first = rows.groupby("loss", sort=False).first().reindex(list(losses))
        shape = (len(losses), len(groups))
        precond = cube["precond_norm"].to_numpy(float).reshape(shape) if "precond_norm" in cube.columns else None
        adam = first["adam_step"].dropna() if "adam_step" in first.columns else pd.Series(dtype=float)
        out.append(StepStats(step=int(step), losses=losses, groups=groups, values=first["value"].to_numpy(float),
                             weights=first["weight"].to_numpy(float), raw_norm=cube["raw_norm"].to_numpy(float).reshape(shape),
                             reached=cube["reached"].fillna(False).to_numpy(bool).reshape(shape),
                             precond_norm=None if precond is None or np.isnan(precond).all() else precond,
                             adam_step=int(adam.iloc[0]) if len(adam) else None))
    return out
