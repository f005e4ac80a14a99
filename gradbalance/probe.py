"""GradientProbe: per-loss, per-group gradient norms measured inside the real backward pass.

For a training objective ``L = sum_i w_i L_i`` and a partition of the parameters θ into groups j,
the probe records ``||w_i ∂L_i/∂θ_j||`` (the quantity tabulated in ST-LIC, Table I: the share of
each loss in the gradient reaching each module). Instead of the naive measurement (one
``autograd.grad`` per loss, then a second full backward of the weighted sum), each loss is
differentiated exactly once and ``w_i g_i`` is accumulated into ``.grad`` by the probe, so a probed
step costs N backward passes instead of N + 1 and leaves the same ``.grad`` as
``sum(w_i L_i).backward()``.

Example::

    probe = GradientProbe(model, {"encoder": model.g_a, "decoder": model.g_s}, every=10)
    losses = {"rate": bpp, "l2": mse}
    probe.backward(losses, {"rate": lmbda, "l2": 1.0})   # instead of (lmbda*bpp + mse).backward()
    optimizer.step()
    print(probe.table().to_markdown())
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Optional

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from gradbalance.distributed import average_across_ranks
from gradbalance.groups import GroupSpec, ParameterGroups, partition_parameters
from gradbalance.preconditioned import adam_denominators, check_optimizer, preconditioned_group_norm
from gradbalance.stats import StepStats, cosine_frame, records_frame
from gradbalance.table import ContributionTable

Grads = list[Optional[Tensor]]


class GradientProbe:
    """Measure per-loss, per-group gradient norms every ``every``-th backward call.

    Args:
        model: the module whose parameters are probed (a DDP wrapper is unwrapped).
        groups: ``{name: spec}``, see :mod:`gradbalance.groups`; must be disjoint.
        loss_order: row order of tables (losses not listed are appended in call order).
        every: probe every ``every``-th call of :meth:`backward`, plain backward otherwise.
        optimizer: an Adam/AdamW optimizer of the model: adds optimizer-aware ``precond_norm``.
        scaler: a ``torch.amp.GradScaler``: losses are scaled before differentiation (so ``.grad``
            is scaled, as ``scaler.step`` expects) and norms are divided by ``scaler.get_scale()``.
        cosine: also record the pairwise cosine between the losses' gradients in each group.
        strict: every trainable parameter must belong to a group or to ``ignore``; by default the
            others are measured as group ``other``. ``ignore`` parameters are deliberately left
            unmeasured (e.g. aux-trained quantiles) and still get ``.grad``.

    Only parameters of ``model`` receive gradients on probed steps; other leaves (e.g. a
    discriminator the generator loss flows through) are left untouched. Under torch.distributed the
    probe averages gradients across ranks itself (see :mod:`gradbalance.distributed`): run the
    forward of probed steps under ``ddp_model.no_sync()`` (:meth:`no_sync_if_probing`).
    """

    def __init__(self, model: nn.Module, groups: Mapping[str, GroupSpec], *,
                 loss_order: Optional[Sequence[str]] = None, every: int = 1,
                 optimizer: Optional[torch.optim.Optimizer] = None, scaler: Optional[object] = None,
                 cosine: bool = False, strict: bool = False, ignore: Iterable[nn.Parameter] = ()) -> None:
        if every < 1:
            raise ValueError(f"every must be a positive integer, got {every}")
        self.partition: ParameterGroups = partition_parameters(model, groups, strict=strict, ignore=ignore)
        self.loss_order = tuple(loss_order or ())
        self.every = int(every)
        self.optimizer = check_optimizer(optimizer) if optimizer is not None else None
        self.scaler = scaler
        self.cosine = cosine
        self.history: list[StepStats] = []
        self.calls = 0

    # -- public API -------------------------------------------------------------------------
    @property
    def probes_next_call(self) -> bool:
        """Whether the next :meth:`backward` call is a probed step."""
        return self.calls % self.every == 0

    def no_sync_if_probing(self, ddp_model: nn.Module) -> contextlib.AbstractContextManager:
        """``ddp_model.no_sync()`` before a probed step (the probe reduces itself), else a no-op."""
        if self.probes_next_call and hasattr(ddp_model, "no_sync"):
            return ddp_model.no_sync()
        return contextlib.nullcontext()

    def backward(self, losses: Mapping[str, Tensor],
                 weights: Optional[Mapping[str, float]] = None) -> Optional[StepStats]:
        """Accumulate the gradient of ``sum_i w_i L_i`` into ``.grad``; probe every ``every`` calls.

        ``losses`` are unweighted scalar tensors; a loss missing from ``weights`` has weight 1.
        Returns the step's :class:`StepStats` on probed steps, None otherwise.
        """
        names, tensors, w = self._validate(losses, weights)
        step = self.calls
        self.calls += 1
        if step % self.every:
            terms = [wi * t for wi, t in zip(w, tensors) if t.requires_grad]
            if terms:
                self._scaled(sum(terms)).backward()
            return None
        stats = self._probe(step, names, tensors, w, accumulate=True)
        self.history.append(stats)
        return stats

    def measure(self, losses: Mapping[str, Tensor], weights: Optional[Mapping[str, float]] = None,
                step: int = -1) -> StepStats:
        """Probe without touching ``.grad`` or the history; the graph is retained for a later backward."""
        names, tensors, w = self._validate(losses, weights)
        return self._probe(step, names, tensors, w, accumulate=False)

    @property
    def records(self) -> pd.DataFrame:
        """Columns step, loss, group, weight, value, norm, raw_norm (+ precond_norm); NaN = absent."""
        return records_frame(self.history)

    @property
    def cosine_records(self) -> pd.DataFrame:
        """Columns step, group, loss_a, loss_b, cosine (requires ``cosine=True``)."""
        return cosine_frame(self.history)

    def table(self, window: Optional[int] = None, column: str = "norm") -> ContributionTable:
        """Table I over the last ``window`` probed steps (all when None)."""
        return ContributionTable.from_records(self.records, window=window, loss_order=self.loss_order,
                                              group_order=self.partition.names, column=column)

    def precond_table(self, window: Optional[int] = None) -> ContributionTable:
        """Optimizer-aware Table I (shares of the Adam update instead of the raw gradient)."""
        if self.optimizer is None:
            raise ValueError("optimizer-aware shares need GradientProbe(..., optimizer=<Adam/AdamW>)")
        return self.table(window, column="precond_norm")

    # -- internals --------------------------------------------------------------------------
    def _validate(self, losses: Mapping[str, Tensor], weights: Optional[Mapping[str, float]]):
        if not losses:
            raise ValueError("no losses given")
        weights = {} if weights is None else weights
        unknown = set(weights) - set(losses)
        if unknown:
            raise ValueError(f"weights given for unknown losses: {sorted(unknown)}")
        names = [n for n in self.loss_order if n in losses] + [n for n in losses if n not in self.loss_order]
        tensors, w = [], []
        for name in names:
            loss = losses[name]
            if not isinstance(loss, Tensor) or loss.numel() != 1:
                raise ValueError(f"loss {name!r} must be a scalar tensor, got "
                                 f"{tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__}")
            weight = weights.get(name, 1.0)
            weight = float(weight.detach()) if isinstance(weight, Tensor) else float(weight)
            if not np.isfinite(weight):
                raise ValueError(f"weight of loss {name!r} is not finite: {weight}")
            tensors.append(loss.reshape(()))
            w.append(weight)
        return tuple(names), tensors, w

    def _scale(self) -> float:
        return float(self.scaler.get_scale()) if self.scaler is not None and self.scaler.is_enabled() else 1.0

    def _scaled(self, loss: Tensor) -> Tensor:
        scale = self._scale()
        return loss * scale if scale != 1.0 else loss

    def _group_norm(self, grads: Grads, group: str) -> Tensor:
        present = [g for g in grads[self.partition.slices[group]] if g is not None]
        if not present:
            return torch.tensor(float("nan"), dtype=torch.float64)
        return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(present)).to(torch.float64))

    def _probe(self, step: int, names, tensors: list[Tensor], w: list[float], accumulate: bool) -> StepStats:
        params = self.partition.params
        groups = self.partition.names
        scale = self._scale()
        keep = self.cosine or self.optimizer is not None
        last = max((i for i, t in enumerate(tensors) if t.requires_grad), default=-1)
        norms, kept = [], []
        for i, loss in enumerate(tensors):
            grads: Grads = [None] * len(params)
            if loss.requires_grad:
                grads = list(torch.autograd.grad(self._scaled(loss), params, allow_unused=True,
                                                 retain_graph=not accumulate or i < last))
            grads = average_across_ranks(grads, params)
            norms.append(torch.stack([self._group_norm(grads, g) for g in groups]))
            if accumulate:
                _accumulate(params, grads, w[i])
            if keep:
                kept.append(grads)
        raw = torch.stack(norms).cpu().numpy() / scale
        precond = self._precond(kept, w, scale, accumulate) if self.optimizer is not None else None
        cosine = self._cosines(kept, w) if self.cosine else None
        return StepStats(step=step, losses=names, groups=groups,
                         values=np.array([float(t.detach()) for t in tensors]), weights=np.array(w),
                         raw_norm=raw, precond_norm=precond, cosine=cosine)

    def _precond(self, kept: list[Grads], w: list[float], scale: float, accumulated: bool) -> np.ndarray:
        params = self.partition.params
        total = []
        for k, p in enumerate(params):
            g = p.grad if accumulated else _sum_existing(p.grad, [(wi, grads[k]) for wi, grads in zip(w, kept)])
            total.append(None if g is None else g / scale)
        denominators = adam_denominators(self.optimizer, params, total)
        out = np.empty((len(kept), len(self.partition.names)))
        for i, grads in enumerate(kept):
            for j, group in enumerate(self.partition.names):
                sl = self.partition.slices[group]
                out[i, j] = float(preconditioned_group_norm(grads[sl], denominators[sl], w[i])) / scale
        return out

    def _cosines(self, kept: list[Grads], w: list[float]) -> np.ndarray:
        n = len(kept)
        out = np.full((len(self.partition.names), n, n), np.nan)
        for j, group in enumerate(self.partition.names):
            sl = self.partition.slices[group]
            flat = [_flatten(grads[sl], self.partition.params[sl]) for grads in kept]
            for a in range(n):
                for b in range(n):
                    if flat[a] is None or flat[b] is None or w[a] * w[b] == 0:
                        continue
                    denom = flat[a].norm() * flat[b].norm()
                    if denom > 0:
                        out[j, a, b] = float(np.sign(w[a] * w[b]) * (flat[a] @ flat[b]) / denom)
        return out


def _flatten(grads: Grads, params: Sequence[nn.Parameter]) -> Optional[Tensor]:
    """The group's gradient as one float64 vector (unreached parameters count as zero); None if absent."""
    if all(g is None for g in grads):
        return None
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).to(torch.float64)
                      for g, p in zip(grads, params)])


def _sum_existing(existing: Optional[Tensor], terms: list[tuple[float, Optional[Tensor]]]) -> Optional[Tensor]:
    """``existing + sum_i w_i g_i`` over the present terms (None if nothing is present)."""
    total = existing.clone() if existing is not None else None
    for weight, g in terms:
        if g is not None:
            total = g * weight if total is None else total.add(g, alpha=weight)
    return total


@torch.no_grad()
def _accumulate(params: Sequence[nn.Parameter], grads: Grads, weight: float) -> None:
    """``p.grad += w * g`` for every present gradient (creating ``.grad`` where it is None)."""
    existing = [(p.grad, g) for p, g in zip(params, grads) if g is not None and p.grad is not None]
    if existing:
        torch._foreach_add_([e for e, _ in existing], [g for _, g in existing], alpha=weight)
    for p, g in zip(params, grads):
        if g is not None and p.grad is None:
            p.grad = g * weight
