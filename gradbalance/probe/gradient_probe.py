"""GradientProbe: per-loss, per-group gradient norms measured inside the real backward pass.

For a training objective ``L = sum_i w_i L_i`` and a partition of the parameters θ into groups j,
the probe records ``||w_i ∂L_i/∂θ_j||`` (the quantity tabulated in ST-LIC, Table I: the share of
each loss in the gradient reaching each module). Instead of the naive measurement (one
``autograd.grad`` per loss, then a second full backward of the weighted sum), each loss is
differentiated exactly once and ``w_i g_i`` is accumulated into ``.grad`` by the probe, so a probed
step costs N backward passes instead of N + 1 and leaves the same ``.grad`` as
``sum(w_i L_i).backward()`` (every leaf the losses reach included, see :mod:`gradbalance.probe.per_loss`).

In a training loop: ``probe = GradientProbe(model, {"encoder": model.g_a, "decoder": model.g_s},
every=10)``, then ``probe.backward({"rate": bpp, "l2": mse}, {"rate": lmbda, "l2": 1.0})`` instead of
``(lmbda * bpp + mse).backward()``, before ``optimizer.step()``. A two-layer model whose rate term
stops at the encoder (weights set so both losses pull equally on it):

    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    >>> with torch.no_grad():
    ...     for layer, value in zip(model, (0.5, 1.0)):
    ...         _ = layer.weight.fill_(value), layer.bias.zero_()
    >>> probe = GradientProbe(model, {"encoder": model[0], "decoder": model[1]}, every=10)
    >>> z = model[0](torch.ones(4, 3))
    >>> losses = {"rate": z.abs().mean(), "l2": model[1](z).pow(2).mean()}
    >>> stats = probe.backward(losses, {"rate": 12.0, "l2": 1.0})  # (12 * rate + l2).backward(), probed
    >>> print(probe.table().to_markdown())
    | loss | encoder | decoder |
    |---|---:|---:|
    | rate | 50.0 ± 0.0 | - |
    | l2 | 50.0 ± 0.0 | 100.0 ± 0.0 |
    <BLANKLINE>
    mean ± std over 1 probed step (0); -: no path from rate to decoder
"""
from __future__ import annotations

import contextlib
import logging
import math
import numbers
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Optional

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from gradbalance.probe.compiled_reach import CompiledReach, compiled_wrappers
from gradbalance.probe.cosines import group_cosines
from gradbalance.probe.distributed import average_across_ranks
from gradbalance.probe.groups import GroupSpec, ParameterGroups, partition_parameters
from gradbalance.probe.loss_weights import Weight, backward_into_weights, call_weights
from gradbalance.probe.optimizer_window import OptimizerWindow, immediate_precond_norms
from gradbalance.probe.per_loss import Grads, accumulate, grads_by_autograd, grads_by_backward, group_norm
from gradbalance.probe.probe_inputs import group_index as _group_index, probe_inputs
from gradbalance.probe.preconditioned import adam_step, check_optimizer
from gradbalance.probe.reachability import describe_pairs, no_path_pairs
from gradbalance.probe.stats import ADAM_WARMUP, StepStats, cosine_frame, records_frame, stats_from_records
from gradbalance.report.table import ContributionTable


log = logging.getLogger("gradbalance.probe")


class GradientProbe:
    """Measure per-loss, per-group gradient norms every ``every``-th backward call.

    Args:
        model: the module whose parameters are probed (a DDP wrapper is unwrapped).
        groups: ``{name: spec}``, see :mod:`gradbalance.probe.groups`; must be disjoint.
        loss_order: row order of tables (losses not listed are appended in call order).
        every: probe every ``every``-th call of :meth:`backward`, plain backward otherwise; with an
            ``optimizer``, every ``every``-th optimizer step (all backward calls of that step, so
            accumulated micro-batches are probed together).
        optimizer: an Adam/AdamW optimizer of the model: adds optimizer-aware ``precond_norm``,
            computed in a step pre-hook from the gradient the step really uses (after unscaling,
            clipping and accumulation; see :mod:`gradbalance.probe.preconditioned`).
        scaler: a ``torch.amp.GradScaler``: losses are scaled before differentiation (so ``.grad``
            is scaled, as ``scaler.step`` expects) and norms are divided by ``scaler.get_scale()``.
        cosine: also record the pairwise cosine between the losses' gradients in each group.
        strict: every trainable parameter must belong to a group or to ``ignore``, and no tensor
            outside the model may reach the losses; by default those are measured as group
            ``other``. ``ignore`` parameters are deliberately left unmeasured (e.g. aux-trained
            quantiles) and still get ``.grad``.

    ``requires_grad`` is read on every call: parameters frozen or unfrozen after construction are
    skipped or measured from then on. Under torch.distributed the probe averages gradients across
    ranks itself (see :mod:`gradbalance.probe.distributed`): run the forward of probed steps under
    ``ddp_model.no_sync()`` (:meth:`no_sync_if_probing`).
    """

    def __init__(self, model: nn.Module, groups: Mapping[str, GroupSpec], *,
                 loss_order: Optional[Sequence[str]] = None, every: int = 1,
                 optimizer: Optional[torch.optim.Optimizer] = None, scaler: Optional[object] = None,
                 cosine: bool = False, strict: bool = False, ignore: Iterable[nn.Parameter] = ()) -> None:
        if isinstance(every, bool) or not isinstance(every, numbers.Integral) or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        every = int(every)
        self.partition: ParameterGroups = partition_parameters(model, groups, strict=strict, ignore=ignore)
        self.loss_order = tuple(loss_order or ())
        self.every = every
        self.optimizer = check_optimizer(optimizer) if optimizer is not None else None
        self.scaler = scaler
        self.cosine = cosine
        self.history: list[StepStats] = []
        self.calls = 0
        self.optimizer_steps = 0
        self._window: Optional[OptimizerWindow] = None
        self._warned: set[str] = set()
        self._loss_scale = 1.0
        self.no_path: list[tuple[str, str]] = []  # (loss, group) pairs seen without a path
        self._compiled = CompiledReach(model) if compiled_wrappers(model) else None
        self._hook = (self.optimizer.register_step_pre_hook(self._before_optimizer_step)
                      if self.optimizer is not None else None)

    # -- public API -------------------------------------------------------------------------
    @property
    def probes_next_call(self) -> bool:
        """Whether the next :meth:`backward` call is a probed step."""
        if self.optimizer is not None:
            return self.optimizer_steps % self.every == 0
        return self.calls % self.every == 0

    def no_sync_if_probing(self, ddp_model: nn.Module) -> contextlib.AbstractContextManager:
        """``ddp_model.no_sync()`` before a probed step (the probe reduces itself), else a no-op."""
        if self.probes_next_call and hasattr(ddp_model, "no_sync"):
            return ddp_model.no_sync()
        return contextlib.nullcontext()

    def backward(self, losses: Mapping[str, Tensor], weights: Optional[Mapping[str, Weight]] = None, *,
                 scale: float = 1.0) -> Optional[StepStats]:
        """Accumulate the gradient of ``scale * sum_i w_i L_i`` into ``.grad``; probe every ``every`` calls.

        ``losses`` are unweighted scalar tensors; a loss missing from ``weights`` has weight 1. A
        weight that requires grad (uncertainty weighting) receives ``scale * L_i`` through it
        (:mod:`gradbalance.probe.loss_weights`). ``scale`` is the training loop's own loss scaling, e.g.
        ``1 / gradient_accumulation_steps`` as ``accelerator.backward`` divides the loss: ``.grad``
        gets it, the recorded norms do not (they stay those of the unscaled ``w_i L_i``).
        Returns the step's :class:`StepStats` on probed steps, None otherwise (its
        ``precond_norm`` is filled in when the optimizer steps).
        """
        names, tensors, w = self._validate(losses, weights)
        self._loss_scale = _check_scale(scale)
        probed = self.probes_next_call
        step = self.calls
        self.calls += 1
        if not probed:
            if self._compiled is not None:
                self._compiled.clear()
            terms = [wi * t for wi, t in zip(w.terms, tensors)
                     if t.requires_grad or (isinstance(wi, Tensor) and wi.requires_grad)]
            if terms:
                self._scaled(sum(terms)).backward()
            return None
        stats = self._probe(step, names, tensors, w.values, accumulate_grads=True)
        if self._compiled is not None:
            self._compiled.clear()
        backward_into_weights(w, tensors, self._scaled)
        self._state_reachability(stats)
        self.history.append(stats)
        return stats

    def measure(self, losses: Mapping[str, Tensor], weights: Optional[Mapping[str, float]] = None,
                step: Optional[int] = None) -> StepStats:
        """Probe without touching ``.grad``, and record it (``step`` defaults to the last recorded + 1).

        The graph is retained for a later backward. Optimizer-aware norms assume the optimizer
        would see ``.grad + sum_i w_i g_i`` (no clipping).
        """
        names, tensors, w = self._validate(losses, weights)
        self._loss_scale = 1.0
        if step is None:
            step = self.history[-1].step + 1 if self.history else 0
        stats = self._probe(int(step), names, tensors, w.values, accumulate_grads=False)
        self._state_reachability(stats)
        self.history.append(stats)
        return stats

    def remove_hooks(self) -> None:
        """Detach the optimizer step pre-hook (the probe stops computing optimizer-aware norms) and the
        forward hooks on compiled modules."""
        if self._compiled is not None:
            self._compiled.remove()
            self._compiled = None
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def state_dict(self) -> dict:
        """Counters and records of every probed step (plain types: ``torch.load(weights_only=True)``);
        cosines are not kept."""
        records = self.records
        return {"calls": self.calls, "optimizer_steps": self.optimizer_steps, "no_path": [list(p) for p in self.no_path],
                "records": {c: records[c].tolist() for c in records.columns}}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore :meth:`state_dict`: probing resumes on the same schedule and the tables cover the saved steps."""
        self.calls, self.optimizer_steps = int(state["calls"]), int(state["optimizer_steps"])
        self.no_path = [tuple(p) for p in state["no_path"]]
        self.history = stats_from_records(pd.DataFrame(state["records"])) if state["records"] else []

    @property
    def records(self) -> pd.DataFrame:
        """Columns step, loss, group, weight, value, norm, raw_norm, reached (+ precond_norm)."""
        return records_frame(self.history)

    @property
    def cosine_records(self) -> pd.DataFrame:
        """Columns step, group, loss_a, loss_b, cosine (requires ``cosine=True``)."""
        return cosine_frame(self.history)

    def table(self, window: Optional[int] = None, column: str = "norm") -> ContributionTable:
        """Table I over the last ``window`` probed steps (all when None)."""
        return ContributionTable.from_records(self.records, window=window, loss_order=self.loss_order,
                                              group_order=self.partition.names, column=column)

    def precond_table(self, window: Optional[int] = None, warmup: int = ADAM_WARMUP) -> ContributionTable:
        """Optimizer-aware Table I (shares of the Adam update instead of the raw gradient).

        Probed steps at Adam steps ``1..warmup`` are skipped: on the first step ``v̂ = G²``, so Adam's
        update is ``lr * sign(G)`` and loss i's optimizer-aware norm is ``||w_i g_i / |G|||``: each entry
        divided by the size of the total there, so the entries where the losses nearly cancel dominate
        and the shares say little about the losses' sizes; in the next steps ``v̂`` averages only a few
        squared gradients. 10 is a judgment (``v̂`` then averages
        10 squared gradients); ``warmup=0`` keeps them."""
        if self.optimizer is None:
            raise ValueError("optimizer-aware shares need GradientProbe(..., optimizer=<Adam/AdamW>)")
        return ContributionTable.from_records(self.records, window=window, loss_order=self.loss_order,
                                              group_order=self.partition.names, column="precond_norm",
                                              warmup=warmup)

    # -- internals --------------------------------------------------------------------------
    def _validate(self, losses: Mapping[str, Tensor], weights: Optional[Mapping[str, float]]):
        if not losses:
            raise ValueError("no losses given")
        weights = {} if weights is None else weights
        unknown = set(weights) - set(losses)
        if unknown:
            raise ValueError(f"weights given for unknown losses: {sorted(unknown)}")
        names = [n for n in self.loss_order if n in losses] + [n for n in losses if n not in self.loss_order]
        tensors = []
        for name in names:
            loss = losses[name]
            if not isinstance(loss, Tensor) or loss.numel() != 1:
                raise ValueError(f"loss {name!r} must be a scalar tensor, got "
                                 f"{tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__}")
            tensors.append(loss.reshape(()))
        return tuple(names), tensors, call_weights(names, weights)

    def _scale(self) -> float:
        """The factor between ``.grad`` and the gradient of ``sum_i w_i L_i``: the call's ``scale`` times
        the GradScaler's scale."""
        grad_scaler = float(self.scaler.get_scale()) if self.scaler is not None and self.scaler.is_enabled() else 1.0
        return grad_scaler * self._loss_scale

    def _scaled(self, loss: Tensor) -> Tensor:
        """``scaler.scale(scale * loss)`` (which also readies the scaler for ``scaler.step``), else ``scale * loss``."""
        if self._loss_scale != 1.0:
            loss = loss * self._loss_scale
        return self.scaler.scale(loss) if self.scaler is not None and self.scaler.is_enabled() else loss

    def _state_reachability(self, stats: StepStats) -> None:
        """Name every (loss, group) pair with no path, once, at the first probed step (and any pair
        that appears later); the pairs are kept in :attr:`no_path`."""
        new = [pair for pair in no_path_pairs(stats) if pair not in self.no_path]
        self.no_path.extend(new)
        if new:
            log.info("step %d: no path from %s (shown as '-')", stats.step, describe_pairs(new))

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, stacklevel=4)

    def _probe(self, step: int, names, tensors: list[Tensor], w: list[float], accumulate_grads: bool) -> StepStats:
        inputs, groups, positions, reentrant = probe_inputs(self.partition, tensors, self._warn_once)
        device = inputs[0].device if inputs else tensors[0].device
        scale = self._scale()
        window = self._window_for_call(inputs) if accumulate_grads and self.optimizer is not None else None
        keep = self.cosine or (self.optimizer is not None and window is None)
        measured = [g >= 0 for g in _group_index(len(inputs), positions)]
        last = max((i for i, t in enumerate(tensors) if t.requires_grad), default=-1)
        norms, reached, kept = [], [], []
        reach = self._compiled.leaves_per_loss(tensors) if self._compiled is not None else None
        for i, loss in enumerate(tensors):
            grads: Grads = [None] * len(inputs)
            if loss.requires_grad and inputs:
                retain = not accumulate_grads or i < last
                grads = (grads_by_backward(self._scaled(loss), w[i], inputs, retain) if reentrant
                         else grads_by_autograd(self._scaled(loss), inputs, retain))
            grads = average_across_ranks(grads, inputs)
            if accumulate_grads:
                accumulate(inputs, grads, w[i])
            if reach is not None:  # compiled: a loss's zeros where it has no path are not a gradient
                grads = [g if id(p) in reach[i] else None for p, g in zip(inputs, grads)]
            norms.append(torch.stack([group_norm([grads[k] for k in ks], device) for ks in positions]))
            reached.append([any(grads[k] is not None for k in ks) for ks in positions])
            if window is not None:
                window.add(names[i], inputs, grads, w[i], measured)
            if keep:
                kept.append(grads)
        raw = torch.stack(norms).cpu().numpy() / scale if norms else np.zeros((0, len(groups)))
        stats = StepStats(step=step, losses=names, groups=groups,
                          values=np.array([float(t.detach()) for t in tensors]), weights=np.array(w),
                          raw_norm=raw, reached=np.array(reached, dtype=bool).reshape(raw.shape))
        self._warn_nonfinite(stats)
        if self.cosine:
            stats.cosine = group_cosines(kept, positions, w)
        if window is not None:
            window.close_call(stats, inputs, positions)
        elif self.optimizer is not None:
            stats.adam_step = adam_step(self.optimizer)
            stats.precond_norm = self._precond_now(inputs, groups, positions, kept, w, scale)
        return stats

    def _warn_nonfinite(self, stats: StepStats) -> None:
        bad = stats.reached & ~np.isfinite(stats.raw_norm)
        if bad.any():
            cells = ", ".join(f"{stats.losses[i]!r} in {stats.groups[j]!r}" for i, j in zip(*np.nonzero(bad)))
            warnings.warn(f"non-finite gradient (NaN/inf) at step {stats.step}: {cells}; these shares are "
                          "recorded as non-finite, not renormalised", RuntimeWarning, stacklevel=4)

    def _precond_now(self, inputs, groups, positions, kept, w, scale) -> np.ndarray:
        """Optimizer-aware norms of a measurement: G = (.grad + sum_i w_i g_i) / scale, no clipping."""
        return immediate_precond_norms(self.optimizer, inputs, _group_index(len(inputs), positions), len(groups),
                                       kept, w, scale)

    def _window_for_call(self, inputs: Sequence[Tensor]) -> OptimizerWindow:
        """The open window of this optimizer step, or a new one when ``.grad`` changed since its last
        probed call (``zero_grad`` after a skipped step, or a backward the probe did not see)."""
        if self._window is None or not self._window.continues(inputs):
            self._window = OptimizerWindow()
        return self._window

    def _before_optimizer_step(self, optimizer, args, kwargs) -> None:
        """Step pre-hook: optimizer-aware norms from the gradient this step uses."""
        window, self._window = self._window, None
        self.optimizer_steps += 1
        if window is not None and window.stats is not None:
            window.stats.adam_step = adam_step(self.optimizer)
            window.stats.precond_norm = window.precond_norms(self.optimizer)


def _check_scale(scale: float) -> float:
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
    return float(scale)
