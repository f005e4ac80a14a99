"""Balancer: hold per-module target gradient shares during training (online :mod:`gradbalance.derive`).

Static derive measures the shares of Table I early, solves once for loss coefficients and keeps
them; the shares then drift as the network trains. The balancer repeats measurement and solve while
training. Every ``every``-th step its :class:`GradientProbe` measures, for loss l and group g, the
gradient norm per unit coefficient

    n_lg(t) = |f_l(t)| ||∂L_l/∂θ_g||          (the Adam-preconditioned norm with ``precond=True``)

where f_l(t) is a per-batch factor (e.g. QVRF's rate lambda drawn per batch; 1 by default) and the
step's weight is w_l(t) = c_l f_l(t). Since n does not depend on the coefficients c, the shares under
any c are predicted as

    s_lg(c) = |c_l| n_lg / Σ_k |c_k| n_kg            (ST-LIC, Table I)

An update law (:mod:`gradbalance.update_laws`: the default ``controller``, feed-forward solve plus
integral feedback on the measured shares; or ``resolve``, an EMA re-solve) turns the measurements
into coefficients through derive's log-share least squares (:mod:`gradbalance.balance_solve`), with
the ``fixed`` coefficients held and each kept inside its ``bounds``; an update changes no coefficient
by more than the factor ``max_change``. A target is the mean share over a window of updates
(:class:`gradbalance.BalancerSpec`). Every step's ``.grad`` is exactly that of ``Σ_l w_l(t) L_l``
(the probe accumulates it).

With ``precond=True`` the probe computes the Adam-update norms in ``optimizer.step()`` (from the gradient
the step really uses), so the balancer reads them and updates in a step post-hook; each update is then
one linearised step of :func:`gradbalance.rebalance`, re-measured at the next probe.

Departure from audiocraft's ``Balancer`` (which rescales the gradient of one output tensor every
step to fixed proportions): we change scalar loss coefficients, so the update stays the gradient of a
weighted sum of the losses, and the targets are per parameter group rather than at one output.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Optional, Union

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from gradbalance.functional.balance_solve import limit_change, unreachable_pairs
from gradbalance.balancer.spec import (BalancerSpec, Targets, check_bounds, check_fixed, check_targets, check_weights,
                                      target_interval)
from gradbalance.probe.distributed import world_size
from gradbalance.io.atomic import atomic_write_text
from gradbalance.probe.groups import GroupSpec
from gradbalance.probe import GradientProbe
from gradbalance.probe.stats import StepStats
from gradbalance.balancer.update_laws import LAWS

log = logging.getLogger("gradbalance.balancer")

#: columns of :attr:`Balancer.history` (``precond_norm`` is appended with ``precond=True``)
HISTORY_COLUMNS = ("step", "loss", "group", "coefficient", "weight", "value", "norm", "raw_norm", "share",
                   "target_low", "target_high")


class Balancer:
    """Adapt loss coefficients during training so each loss keeps its target share per group.

    Args:
        model: the trained module (a DDP wrapper is unwrapped); ``groups``: ``{name: spec}`` as for
            :class:`GradientProbe` (``strict``/``ignore`` as there).
        targets: ``"equal"``, ``{group: {loss: percent}}`` (None: untargeted) or ``{loss: (min%, max%)}``;
            a target is the mean share over a window of updates (:class:`BalancerSpec`).
        weights: initial coefficients ``{loss: c_l}``, nonzero; every loss passed to :meth:`backward`.
        optimizer: Adam/AdamW, needed for ``precond=True`` (balance the shares of the Adam update).
        spec: a :class:`BalancerSpec`; or its fields as keywords (``every``, ``ema``, ``window``, ``law``,
            ``gain``, ``max_change``, ``fixed``, ``bounds``, ``precond``, ``tolerance``), which override it.

    Targets whose group cannot sum to 100 % are refused here; a target on a (loss, group) pair with
    no gradient path is an error naming the pair at the first probed step.

    Example (``balancer.backward`` replaces ``sum(c_l L_l).backward()``, probing every ``every`` steps):
        >>> import torch
        >>> from torch import nn
        >>> _ = torch.manual_seed(0)
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 4))
        >>> balancer = Balancer(model, {"encoder": model[0], "decoder": model[1]},
        ...                     targets={"decoder": {"l2": 70, "l1": 30}}, weights={"l2": 1.0, "l1": 1.0}, every=2)
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        >>> for _ in range(6):
        ...     x = torch.randn(16, 4)
        ...     y = model(x)
        ...     _ = balancer.backward({"l2": (y - x).pow(2).mean(), "l1": (y - x).abs().mean()})
        ...     optimizer.step(); optimizer.zero_grad()
        >>> balancer.weights["l2"], balancer.weights["l1"] != 1.0   # l2 held (the first loss), l1 moved
        (1.0, True)
        >>> sorted(balancer.history["step"].unique().tolist())      # the probed steps
        [0, 2, 4]
    """

    def __init__(self, model: nn.Module, groups: Mapping[str, GroupSpec], targets: Optional[Targets] = None, *,
                 weights: Mapping[str, float], optimizer: Optional[torch.optim.Optimizer] = None,
                 spec: Optional[BalancerSpec] = None, loss_order: Optional[Sequence[str]] = None,
                 scaler: Optional[object] = None, strict: bool = False, ignore: Iterable[nn.Parameter] = (),
                 **settings) -> None:
        unknown = sorted(set(settings) - {f.name for f in dataclasses.fields(BalancerSpec)})
        if unknown:
            raise TypeError(f"Balancer got unknown setting(s) {unknown}; see gradbalance.BalancerSpec")
        if targets is not None:
            settings["targets"] = targets
        if spec is None:
            if "targets" not in settings:
                raise ValueError("targets: give the target shares (or spec=BalancerSpec(...))")
            spec = BalancerSpec(**settings)
        elif settings:
            spec = spec.replace(**settings)
        if spec.precond and optimizer is None:
            raise ValueError("precond=True balances the Adam update: pass optimizer=<Adam/AdamW>")
        self.spec = spec
        self.weights = check_weights(weights)
        order = [l for l in (loss_order or ()) if l in self.weights]
        self.losses = tuple(order + [l for l in self.weights if l not in order])
        self.probe = GradientProbe(model, groups, loss_order=self.losses, every=spec.every,
                                   optimizer=optimizer if spec.precond else None, scaler=scaler, strict=strict,
                                   ignore=ignore)
        self.groups = self.probe.partition.names
        spec.check(self.losses, self.groups)
        self.targets = check_targets(spec.targets, self.losses, self.groups)
        self.fixed = check_fixed(spec.fixed, self.weights, self.losses[0])
        self.weights.update(self.fixed)
        self.bounds = check_bounds(spec.bounds, self.weights)
        self.ema, self.max_change, self.precond, self.tolerance = spec.ema, spec.max_change, spec.precond, spec.tolerance
        self.law = LAWS[spec.law]((len(self.losses), len(self.groups)), ema=spec.ema, gain=spec.gain,
                                  window=spec.window, values=spec.loss_values, every=spec.every)
        self.updates = 0
        self.misses: dict[tuple[str, str], float] = {}  # (loss, group) -> percentage points, last update
        self.unreachable: Optional[list[tuple[str, str]]] = None  # pairs with no path, from the first probe
        self._rows: list[dict] = []
        self._pending: Optional[StepStats] = None  # precond: the probed step's stats, until optimizer.step()
        if spec.precond:
            optimizer.register_step_post_hook(self._after_optimizer_step)

    @property
    def norms(self) -> np.ndarray:
        """The update law's smoothed per-unit-coefficient norms u_lg (losses x groups, NaN = unmeasured)."""
        return self.law.norms

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
        jumped = self.law.tracks_values and self.law.track(self._step_values(losses, factors))
        if stats is None:
            if jumped and self.updates:  # a loss's scale jumped: re-solve now from the loss values alone
                self._update(self.probe.calls)
            return None
        if self.unreachable is None:
            self._check_paths(stats, {l for l, t in losses.items() if t.requires_grad})
        self.probe.history.clear()  # the balancer keeps its own history
        if self.precond:
            self._pending = stats  # the last probed micro-batch's stats receive the step's precond_norm
        else:
            self._observe(stats)
            self._update(stats.step)
        return stats

    def _step_values(self, losses: Mapping[str, Tensor], factors: Mapping[str, float]) -> np.ndarray:
        """|f_l L_l| of this step per loss (NaN: not passed): one host read of a few numbers per step."""
        device = next(iter(losses.values())).device
        nan = torch.tensor(float("nan"), dtype=torch.float64, device=device)
        row = torch.stack([losses[l].detach().to(device=device, dtype=torch.float64).reshape(()) if l in losses
                           else nan for l in self.losses])
        return (row * torch.tensor([factors.get(l, 1.0) for l in self.losses], dtype=torch.float64,
                                   device=device)).abs().cpu().numpy()

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
        rows = [self.losses.index(l) for l in stats.losses]
        columns = [stats.groups.index(g) if g in stats.groups else None for g in self.groups]
        new, measured = (np.full((len(self.losses), len(self.groups)), np.nan) for _ in range(2))
        for j, k in enumerate(columns):
            if k is not None:
                new[rows, j], measured[rows, j] = unit[:, k], shares[:, k]
        self.law.observe(new, measured)
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

    def _check_paths(self, stats: StepStats, differentiable: set) -> None:
        """First probed step: log every (loss, group) pair with no gradient path, once; a target on one is an error."""
        index = {l: i for i, l in enumerate(stats.losses)}
        reached = np.ones((len(self.losses), len(self.groups)), dtype=bool)
        for i, loss in enumerate(self.losses):
            for j, group in enumerate(self.groups):
                if loss in index and loss in differentiable and group in stats.groups:
                    reached[i, j] = stats.reached[index[loss], stats.groups.index(group)]
        self.unreachable = [(l, g) for i, l in enumerate(self.losses) for j, g in enumerate(self.groups)
                            if not reached[i, j]]
        if self.unreachable:
            log.info("balancer: no gradient path from %s", ", ".join(f"{l} to {g}" for l, g in self.unreachable))
        targeted = unreachable_pairs(self.targets, self.losses, self.groups, reached)
        if targeted:
            cells = ", ".join(f"{l!r} in {g!r}" for l, g in targeted)
            raise ValueError(f"balancer targets {cells}, but the loss has no gradient path to the group: "
                             "drop the target or set it to 0")

    def _update(self, step: int) -> None:
        try:
            solved, predicted = self.law.propose(self.losses, self.groups, self.weights, self.targets,
                                                 self.bounds, self.fixed)
        except ValueError as error:  # a degenerate measurement must not end a long run: hold the weights
            log.warning("balancer step %d: weights held, the solver refused the update: %s", step, error)
            return
        limited = limit_change(self.weights, solved, self.max_change, self.bounds)
        new = _same_on_all_ranks([limited[l] for l in self.losses], self.probe.partition.params[0].device)
        self.weights = dict(zip(self.losses, new))
        self.law.applied(self.weights)
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
        return {"weights": dict(self.weights), "norms": torch.from_numpy(np.array(self.norms, dtype=np.float64)),
                "law": self.spec.law, "law_state": self.law.state_dict(),
                "unreachable": None if self.unreachable is None else [list(p) for p in self.unreachable],
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
        if state.get("law", "resolve") != self.spec.law:
            raise ValueError(f"balancer state was written by law {state.get('law', 'resolve')!r}; this balancer "
                             f"uses {self.spec.law!r}")
        if "law_state" in state:
            self.law.load_state_dict(state["law_state"])
        else:  # written before update laws: the EMA norms of the re-solve
            self.law.load_state_dict({"norms": state["norms"].numpy().astype(np.float64).tolist()})
        unreachable = state.get("unreachable")
        self.unreachable = None if unreachable is None else [tuple(p) for p in unreachable]
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
                "every": self.probe.every, "ema": self.ema, "law": self.spec.law, "targets": self.targets, **dict(metadata or {})}
        atomic_write_text(path / RECORDS, self.history.to_csv(index=False))
        atomic_write_text(path / METADATA, json.dumps(meta, indent=2, default=str))
        return path


def _same_on_all_ranks(values: list[float], device: torch.device) -> list[float]:
    """Rank 0's ``values`` on every rank (identity when not distributed): all ranks train with the same weights."""
    if world_size() == 1:
        return values
    import torch.distributed as dist

    packed = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(packed, src=0)
    return packed.tolist()
