"""OptimizerWindow: what the probe keeps between its backward calls and the optimizer step.

The optimizer-aware norm of loss i is measured against the gradient ``optimizer.step()`` really
uses (:mod:`gradbalance.probe.preconditioned`). Between the last probed backward and the step the
training loop may unscale, clip (``clip_grad_norm_``) and accumulate further probed micro-batches,
so the window keeps, per loss and measured parameter, only the contribution ``A_ik = sum w_i g_ik``
over the probed calls since the last step (the autograd result itself while there is one call: no
copy), plus the norm of ``.grad`` after the last probed call. At the step,
``c_k = ||G_k|| / ||.grad_k after the last probed call||`` is the per-parameter factor the loop
applied (1 / loss scale, times the clip factor): exact as long as the loop only rescales ``.grad``
after the last probed call (adding an unprobed gradient then is not attributed).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np
import torch
from torch import Tensor

from gradbalance.probe.preconditioned import preconditioned_norms
from gradbalance.probe.stats import StepStats


class OptimizerWindow:
    """Per-loss gradient contributions of the probed calls of one optimizer step."""

    def __init__(self) -> None:
        self.params: dict[int, Tensor] = {}
        self.contributions: dict[str, dict[int, tuple[Tensor, float]]] = {}
        self.end_norms: dict[int, Tensor] = {}
        self.group_of: dict[int, str] = {}
        self.stats: Optional[StepStats] = None

    def add(self, loss: str, inputs: Sequence[Tensor], grads: Sequence[Optional[Tensor]], weight: float,
            measured: Sequence[bool]) -> None:
        """Add ``w g`` of one loss (only the measured parameters are kept)."""
        entries = self.contributions.setdefault(loss, {})
        for p, g, keep in zip(inputs, grads, measured):
            if g is None or not keep:
                continue
            key = id(p)
            self.params[key] = p
            if key not in entries:
                entries[key] = (g, weight)
            else:
                a, s = entries[key]
                entries[key] = ((a * s).add_(g, alpha=weight), 1.0)

    def close_call(self, stats: StepStats, inputs: Sequence[Tensor], positions: Sequence[Sequence[int]]) -> None:
        """After a probed call: remember its stats (they receive the norms) and ``.grad``'s norms."""
        self.stats = stats
        for j, ks in enumerate(positions):
            for k in ks:
                self.group_of[id(inputs[k])] = stats.groups[j]
        params = list(self.params.values())
        grads = [p.grad for p in params]
        norms = torch._foreach_norm([g for g in grads if g is not None]) if any(g is not None for g in grads) else []
        it = iter(norms)
        self.end_norms = {id(p): next(it) for p, g in zip(params, grads) if g is not None}

    def continues(self, inputs: Sequence[Tensor]) -> bool:
        """Whether ``.grad`` is as the last probed call left it (else the window starts afresh)."""
        if self.stats is None:
            return True
        params = list(self.params.values())
        if any((p.grad is None) != (id(p) not in self.end_norms) for p in params):
            return False
        present = [p for p in params if p.grad is not None]
        if not present:
            return True
        now = torch.stack(torch._foreach_norm([p.grad for p in present]))
        return bool(torch.equal(now, torch.stack([self.end_norms[id(p)] for p in present])))

    def precond_norms(self, optimizer: torch.optim.Optimizer) -> np.ndarray:
        """``precond_norm`` of :attr:`stats` from the gradient the optimizer is about to use."""
        stats = self.stats
        params = list(self.params.values())
        grads = [p.grad for p in params]
        factors: list[Optional[Tensor]] = []
        present = [(p, g) for p, g in zip(params, grads) if g is not None and id(p) in self.end_norms]
        final = dict(zip((id(p) for p, _ in present), torch._foreach_norm([g for _, g in present]))) if present else {}
        for p in params:
            end = self.end_norms.get(id(p))
            if id(p) not in final or end is None:
                factors.append(None)
                continue
            factors.append(torch.where(end > 0, final[id(p)] / end, torch.zeros_like(end)))
        group_index = {name: j for j, name in enumerate(stats.groups)}
        groups = [group_index.get(self.group_of.get(id(p), ""), -1) for p in params]
        contributions = [[self.contributions.get(loss, {}).get(id(p)) for p in params] for loss in stats.losses]
        self.contributions.clear()
        return preconditioned_norms(optimizer, params, groups, len(stats.groups),
                                    [g if id(p) in final else None for p, g in zip(params, grads)],
                                    contributions, factors, release=True)


def immediate_precond_norms(optimizer: torch.optim.Optimizer, inputs: Sequence[Tensor], group_of: Sequence[int],
                            n_groups: int, kept: Sequence[Sequence[Optional[Tensor]]], weights: Sequence[float],
                            scale: float) -> np.ndarray:
    """Norms of a measurement that does not step: G = (.grad + sum_i w_i g_i) / scale, c = 1 / scale."""
    contributions = [[None if g is None or group_of[k] < 0 else (g, weights[i]) for k, g in enumerate(grads)]
                     for i, grads in enumerate(kept)]
    totals = []
    for k, p in enumerate(inputs):
        total = p.grad.clone() if p.grad is not None else None
        for c in contributions:
            if c[k] is not None:
                total = c[k][0] * c[k][1] if total is None else total.add_(c[k][0], alpha=c[k][1])
        totals.append(None if total is None else total / scale)
    factor = torch.full((), 1.0 / scale, dtype=torch.float64, device=inputs[0].device) if inputs else None
    return preconditioned_norms(optimizer, inputs, group_of, n_groups, totals, contributions, [factor] * len(inputs))
