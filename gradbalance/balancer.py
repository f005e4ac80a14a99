"""Balancer: hold per-module target gradient shares during training (online :mod:`gradbalance.derive`).

Static derive measures the shares of Table I early, solves once for loss coefficients and keeps
them; the shares then drift as the network trains. The balancer repeats measurement and solve while
training. Every ``every``-th step its :class:`GradientProbe` measures, for loss l and group g, the
gradient norm per unit coefficient

    n_lg(t) = |f_l(t)| ||∂L_l/∂θ_g||          (the Adam-preconditioned norm with ``precond=True``)

where f_l(t) is a per-batch factor (e.g. QVRF's rate lambda drawn per batch; 1 by default) and the
step's weight is w_l(t) = c_l f_l(t). An exponential moving average smooths it,

    u_lg <- β u_lg + (1 - β) n_lg ,

and, since u does not depend on the coefficients c, the shares under any c are predicted as

    s_lg(c) = |c_l| u_lg / Σ_k |c_k| u_kg            (ST-LIC, Table I)

Derive's log-share least squares (:func:`_solve`, through :func:`gradbalance.derive_from_norms`) picks the c that best meets the targets with the
``fixed`` coefficients held and each coefficient kept inside its ``bounds``; an update changes no
coefficient by more than the factor ``max_change``. Every step's ``.grad`` is exactly that of
``Σ_l w_l(t) L_l`` (the probe accumulates it).

With ``precond=True`` the probe computes the Adam-update norms in ``optimizer.step()`` (from the gradient
the step really uses), so the balancer reads them and updates in a step post-hook; each update is then
one linearised step of :func:`gradbalance.rebalance`, re-measured at the next probe.

Departure from audiocraft's ``Balancer`` (which rescales the gradient of one output tensor every
step to fixed proportions): we change scalar loss coefficients, so the update stays the gradient of a
weighted sum of the losses, and the targets are per parameter group rather than at one output.
"""
from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Optional, Union

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from gradbalance.balance_spec import (Targets, check_bounds, check_fixed, check_targets, check_weights,
                                      target_interval)
from gradbalance.derive import derive_from_norms
from gradbalance.distributed import world_size
from gradbalance.export import atomic_write_text
from gradbalance.groups import GroupSpec
from gradbalance.probe import GradientProbe
from gradbalance.stats import StepStats

log = logging.getLogger("gradbalance.balancer")

#: columns of :attr:`Balancer.history` (``precond_norm`` is appended with ``precond=True``)
HISTORY_COLUMNS = ("step", "loss", "group", "coefficient", "weight", "value", "norm", "raw_norm", "share",
                   "target_low", "target_high")


class Balancer:
    """Adapt loss coefficients during training so each loss keeps its target share per group.

    Args:
        model: the trained module (a DDP wrapper is unwrapped); ``groups``: ``{name: spec}`` as for
            :class:`GradientProbe` (``strict``/``ignore`` as there).
        targets: ``"equal"``, ``{group: {loss: percent}}`` (None: untargeted) or ``{loss: (min%, max%)}``.
        weights: initial coefficients ``{loss: c_l}``, nonzero; every loss passed to :meth:`backward`.
        optimizer: Adam/AdamW, needed for ``precond=True`` (balance the shares of the Adam update).
        every: probe and update every ``every`` calls of :meth:`backward`; ``ema``: β above.
        bounds: ``{loss: (lo, hi)}`` limits of the coefficients; ``fixed``: coefficients to hold,
            ``{loss: value}`` or loss names (held at their initial value). Shares do not change when all
            coefficients scale together, so one is always held: the first loss when ``fixed`` is empty.
        max_change: the largest factor by which one update moves a coefficient (> 1).
        tolerance: a target missed by more percentage points than this is reported in the log.

    Example::

        balancer = Balancer(model, {"encoder": model.g_a, "decoder": model.g_s},
                            targets={"encoder": {"rate": 20}, "decoder": {"l2": 70, "lpips": 30}},
                            weights={"rate": 0.01, "l2": 1.0, "lpips": 0.1}, every=10, fixed=["rate"])
        for x in loader:
            balancer.backward(losses(model, x))    # == sum(c_l L_l).backward(), probing every 10 steps
            optimizer.step(); optimizer.zero_grad()
        balancer.weights, balancer.history         # current coefficients; weights and shares per probe
    """

    def __init__(self, model: nn.Module, groups: Mapping[str, GroupSpec], targets: Targets, *,
                 weights: Mapping[str, float], optimizer: Optional[torch.optim.Optimizer] = None,
                 every: int = 10, ema: float = 0.9, bounds: Optional[Mapping[str, Sequence[float]]] = None,
                 fixed: Union[Mapping[str, float], Iterable[str], None] = None, max_change: float = 2.0,
                 precond: bool = False, tolerance: float = 0.5, loss_order: Optional[Sequence[str]] = None,
                 scaler: Optional[object] = None, strict: bool = False, ignore: Iterable[nn.Parameter] = ()) -> None:
        if not 0 <= ema < 1:
            raise ValueError(f"ema must be in [0, 1), got {ema}")
        if not max_change > 1:
            raise ValueError(f"max_change must be > 1 (a factor per update), got {max_change}")
        if precond and optimizer is None:
            raise ValueError("precond=True balances the Adam update: pass optimizer=<Adam/AdamW>")
        self.weights = check_weights(weights)
        order = [l for l in (loss_order or ()) if l in self.weights]
        self.losses = tuple(order + [l for l in self.weights if l not in order])
        self.probe = GradientProbe(model, groups, loss_order=self.losses, every=every,
                                   optimizer=optimizer if precond else None, scaler=scaler, strict=strict, ignore=ignore)
        self.groups = self.probe.partition.names
        self.targets = check_targets(targets, self.losses, self.groups)
        self.fixed = check_fixed(fixed, self.weights, self.losses[0])
        self.weights.update(self.fixed)
        self.bounds = check_bounds(bounds, self.weights)
        self.ema, self.max_change, self.precond, self.tolerance = float(ema), float(max_change), precond, tolerance
        self.norms = np.full((len(self.losses), len(self.groups)), np.nan)  # u_lg, NaN = not measured
        self.updates = 0
        self.misses: dict[tuple[str, str], float] = {}  # (loss, group) -> percentage points, last update
        self._rows: list[dict] = []
        self._pending: Optional[StepStats] = None  # precond: the probed step's stats, until optimizer.step()
        if precond:
            optimizer.register_step_post_hook(self._after_optimizer_step)

    # -- training ---------------------------------------------------------------------------
    def backward(self, losses: Mapping[str, Tensor], factors: Optional[Mapping[str, float]] = None) -> Optional[StepStats]:
        """Accumulate the gradient of ``Σ_l c_l f_l L_l`` into ``.grad``; probe and update every ``every`` calls.

        ``losses`` are unweighted scalars; ``factors`` the per-batch f_l (missing: 1). Returns the
        probed step's :class:`StepStats`, else None. With ``precond=True`` the update waits for
        ``optimizer.step()``, which measures the Adam-update norms.
        """
        unknown = sorted(set(losses) - set(self.weights)) + sorted(set(factors or {}) - set(self.weights))
        if unknown:
            raise ValueError(f"loss(es) {unknown} have no coefficient; the balancer has {list(self.losses)}")
        factors = {l: float(f) for l, f in (factors or {}).items()}
        stats = self.probe.backward(losses, {l: self.weights[l] * factors.get(l, 1.0) for l in losses})
        if stats is None:
            return None
        self.probe.history.clear()  # the balancer keeps its own history
        if self.precond:
            self._pending = stats  # the last probed micro-batch's stats receive the step's precond_norm
        else:
            self._observe(stats)
            self._update(stats.step)
        return stats

    def _after_optimizer_step(self, optimizer, args, kwargs) -> None:
        """Step post-hook (``precond=True``): the probe's pre-hook has set ``precond_norm``; observe and update."""
        stats, self._pending = self._pending, None
        if stats is not None and stats.precond_norm is not None:
            self._observe(stats)
            self._update(stats.step)

    def no_sync_if_probing(self, ddp_model: nn.Module) -> contextlib.AbstractContextManager:
        """Wrap each step's DDP forward in this: ``no_sync()`` on probed steps, where the probe reduces itself."""
        return self.probe.no_sync_if_probing(ddp_model)

    @property
    def shares(self) -> pd.DataFrame:
        """Predicted shares (%) under the current coefficients from the smoothed norms (NaN: unmeasured)."""
        scaled = self.norms * np.abs([self.weights[l] for l in self.losses])[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            shares = 100.0 * scaled / np.nansum(scaled, axis=0, keepdims=True)
        return pd.DataFrame(shares, index=list(self.losses), columns=list(self.groups))

    @property
    def measured(self) -> Optional[pd.DataFrame]:
        """Shares (%) measured at the latest probe under the weights then in effect (None before one)."""
        if not self._rows:
            return None
        last = self._rows[-1]["step"]
        rows = [row for row in self._rows[-len(self.losses) * len(self.groups):] if row["step"] == last]
        shares = pd.DataFrame(rows).pivot(index="loss", columns="group", values="share")
        return shares.reindex(index=[l for l in self.losses if l in shares.index], columns=list(self.groups))

    @property
    def history(self) -> pd.DataFrame:
        """One row per probed step, loss and group: the coefficient c_l and the weight c_l f_l in
        effect, the measured norms and share (%), and the targeted interval (NaN: untargeted)."""
        columns = list(HISTORY_COLUMNS) + (["precond_norm"] if self.precond else [])
        return pd.DataFrame(self._rows, columns=columns)

    # -- internals --------------------------------------------------------------------------
    def _observe(self, stats: StepStats) -> None:
        column = stats.precond_norm if self.precond else stats.norm
        applied = np.abs(stats.weights)[:, None]
        coefficients = np.abs([self.weights[l] for l in stats.losses])[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            unit = np.where(applied > 0, column / coefficients, np.nan)  # f = 0: no information
            shares = 100.0 * column / np.nansum(column, axis=0, keepdims=True)
        new = np.full_like(self.norms, np.nan)
        new[[self.losses.index(l) for l in stats.losses]] = unit
        old = self.norms
        self.norms = np.where(np.isnan(old), new, np.where(np.isnan(new), old, self.ema * old + (1 - self.ema) * new))
        present = np.isfinite(shares).sum(axis=0)
        for i, loss in enumerate(stats.losses):
            for j, group in enumerate(stats.groups):
                low, high = target_interval(self.targets, loss, group, int(present[j])) \
                    if np.isfinite(shares[i, j]) else (np.nan, np.nan)
                row = dict(step=stats.step, loss=loss, group=group, coefficient=self.weights[loss],
                           weight=float(stats.weights[i]), value=float(stats.values[i]), norm=float(stats.norm[i, j]),
                           raw_norm=float(stats.raw_norm[i, j]), share=float(shares[i, j]),
                           target_low=low, target_high=high)
                if self.precond:
                    row["precond_norm"] = float(stats.precond_norm[i, j])
                self._rows.append(row)

    def _update(self, step: int) -> None:
        norms = pd.DataFrame(self.norms, index=list(self.losses), columns=list(self.groups))
        try:
            solved, predicted = _solve(norms, self.weights, self.targets, self.bounds, self.fixed)
        except ValueError as error:  # a degenerate measurement must not end a long run: hold the weights
            log.warning("balancer step %d: weights held, the solver refused the update: %s", step, error)
            return
        new = []
        for loss in self.losses:
            current = self.weights[loss]
            ratio = float(np.clip(solved[loss] / current, 1 / self.max_change, self.max_change))
            low, high = self.bounds.get(loss, (-np.inf, np.inf))
            new.append(float(np.clip(current * ratio, low, high)))
        self.weights = dict(zip(self.losses, _same_on_all_ranks(new, self.probe.partition.params[0].device)))
        self.updates += 1
        self.misses = self._misses(predicted)
        if self.misses:
            cells = "; ".join(f"{l}/{g} misses by {m:.2f} pp (best {predicted.loc[l, g]:.2f} %)"
                              for (l, g), m in self.misses.items())
            log.warning("balancer step %d: target(s) out of reach: %s", step, cells)

    def _misses(self, predicted: pd.DataFrame) -> dict[tuple[str, str], float]:
        """Percentage points by which the solver's best shares miss each targeted interval (> tolerance)."""
        out = {}
        for group in predicted.columns:
            present = int(predicted[group].notna().sum())
            for loss in predicted.index:
                share = predicted.loc[loss, group]
                low, high = target_interval(self.targets, loss, group, present)
                if np.isnan(low) or np.isnan(share):
                    continue
                miss = max(share - high, low - share, 0.0)
                if miss > self.tolerance:
                    out[(loss, group)] = float(miss)
        return out

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Coefficients, smoothed norms, probe counter and history (loadable with ``weights_only=True``)."""
        history = self.history
        return {"weights": dict(self.weights), "norms": torch.from_numpy(self.norms.copy()),
                "losses": list(self.losses), "groups": list(self.groups), "calls": self.probe.calls,
                "optimizer_steps": self.probe.optimizer_steps,
                "updates": self.updates, "misses": [[l, g, m] for (l, g), m in self.misses.items()],
                "history": {c: history[c].tolist() for c in history.columns}}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore :meth:`state_dict` (same losses and groups): training resumes exactly."""
        if list(state["losses"]) != list(self.losses) or list(state["groups"]) != list(self.groups):
            raise ValueError(f"balancer state has losses {state['losses']} and groups {state['groups']}; "
                             f"this balancer has {list(self.losses)} and {list(self.groups)}")
        self.weights = {l: float(state["weights"][l]) for l in self.losses}
        self.norms = state["norms"].numpy().astype(np.float64)
        self.probe.calls, self.updates = int(state["calls"]), int(state["updates"])
        self.probe.optimizer_steps = int(state.get("optimizer_steps", 0))
        self.misses = {(l, g): float(m) for l, g, m in state["misses"]}
        history = state["history"]
        self._rows = pd.DataFrame(history).to_dict("records") if history else []

    def save(self, path: Union[str, Path], metadata: Optional[Mapping] = None) -> Path:
        """Write the history as a probe run (``records.csv``, ``run.json``): ``gradbalance plot PATH``
        draws shares against targets and the coefficients over steps."""
        from gradbalance.run import METADATA, RECORDS

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {"balancer": True, "loss_order": list(self.losses), "groups": list(self.groups),
                "every": self.probe.every, "ema": self.ema, "targets": self.targets, **dict(metadata or {})}
        atomic_write_text(path / RECORDS, self.history.to_csv(index=False))
        atomic_write_text(path / METADATA, json.dumps(meta, indent=2, default=str))
        return path


def _solve(norms: pd.DataFrame, weights: Mapping[str, float], targets: Targets,
           bounds: Mapping[str, tuple[float, float]], fixed: Mapping[str, float]) -> tuple[dict[str, float], pd.DataFrame]:
    """New coefficients for the targets, and the shares (%) predicted under them.

    ``norms``: the smoothed per-unit-coefficient norms u_lg (losses x groups, NaN = unmeasured or
    absent). The one call into derive: :func:`gradbalance.derive.derive_from_norms` on the weighted
    norms |c_l| u_lg at ``weights``. Losses never measured, and targeted cells with no gradient,
    are held (:func:`_reachable`). Bounds are enforced as an active set: a coefficient the solution
    puts outside its bounds is held at the bound and the rest re-solved.
    """
    measured = [l for l in norms.index if norms.loc[l].notna().any()]
    scaled = norms.loc[measured].mul([abs(weights[l]) for l in measured], axis=0)
    shares = 100.0 * scaled / scaled.sum(axis=0, min_count=1)
    goal = _reachable(targets, shares)
    if not measured or goal is None:
        return dict(weights), shares
    at = {l: weights[l] for l in measured}
    held = {l: v for l, v in fixed.items() if l in measured}
    for _ in range(len(measured) + 1):
        result = derive_from_norms(scaled, at, goal, fixed=held or None)
        solved = {**weights, **{l: float(v) for l, v in result.coefficients.items()}}
        outside = {l: float(np.clip(solved[l], *bounds[l])) for l in bounds
                   if l in measured and l not in held and not bounds[l][0] <= solved[l] <= bounds[l][1]}
        if not outside:
            break
        held.update(outside)
    return solved, result.predicted


def _reachable(targets: Targets, shares: pd.DataFrame) -> Optional[Targets]:
    """The part of ``targets`` the solver can act on now (measured, nonzero cells); None if nothing.

    A targeted loss with no gradient in a group now (e.g. the adversarial loss in its warm-up, factor 0)
    is left out there; if every loss that does reach the group is targeted, their targets are scaled
    to sum to 100 % in the same ratios (derive refuses targets that cannot sum to 100 %).
    """
    if isinstance(targets, str):
        return targets
    if all(isinstance(v, Mapping) for v in targets.values()):
        goal = {}
        for group, cells in targets.items():
            if group not in shares.columns:
                continue
            reaching = shares.index[shares[group] > 0]
            kept = {l: p for l, p in cells.items() if p and l in reaching}
            dropped = any(p and l not in kept for l, p in cells.items())
            if kept and dropped and set(reaching) <= set(kept):
                total = sum(kept.values())
                kept = {l: 100.0 * p / total for l, p in kept.items()}
            if kept:
                goal[group] = kept
    else:
        goal = {l: b for l, b in targets.items() if l in shares.index}
    return goal or None


def _same_on_all_ranks(values: list[float], device: torch.device) -> list[float]:
    """Rank 0's ``values`` on every rank (identity when not distributed): all ranks train with the same weights."""
    if world_size() == 1:
        return values
    import torch.distributed as dist

    packed = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(packed, src=0)
    return packed.tolist()
