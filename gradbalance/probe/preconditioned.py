"""Optimizer-aware norms: the size of each loss's contribution to the Adam/AdamW *update*.

Adam (Kingma & Ba, 2015) moves a parameter by ``lr * m̂ / (sqrt(v̂) + ε)``; the first moment is a
linear function of the gradient, so loss i contributes ``(1-β1)/(1-β1^t) * c A_i / (sqrt(v̂_t)+ε)``
to this step's update. The common factor ``(1-β1)/(1-β1^t)`` does not change shares and is dropped:

    precond_norm_ij = || c A_ij / (sqrt(v̂_t) + ε) ||,
    v_t = β2 v_{t-1} + (1-β2) G_t²,   v̂_t = v_t / (1 - β2^t)   (amsgrad: max(v_max, v_t))

where G_t is the gradient ``optimizer.step()`` really uses (read in a step pre-hook: after
unscaling, ``clip_grad_norm_`` and every accumulated micro-batch), A_ij the sum of ``w_i g_ij``
over the probed backward calls since the last step, and c the per-parameter factor
``||G_t|| / ||.grad after the last probed backward||`` (1 / loss scale, times the clip factor).
Coupled weight decay (Adam with ``weight_decay``) enters G_t as Adam adds it; AdamW decays
decoupled. The state is read from ``optimizer.state`` before the step, so the denominator is exactly
the one ``optimizer.step()`` is about to use.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn


def adam_step(optimizer: torch.optim.Optimizer) -> int:
    """The number of the step ``optimizer.step()`` is about to take (1 = the first), from its state."""
    steps = [float(state["step"]) for state in optimizer.state.values() if "step" in state]
    return int(max(steps, default=0.0)) + 1


def supports_preconditioning(optimizer: object) -> bool:
    """Whether optimizer-aware norms can be computed for ``optimizer`` (Adam, AdamW)."""
    return isinstance(optimizer, torch.optim.Adam)  # AdamW subclasses Adam


def check_optimizer(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """``optimizer`` itself (the wrapped optimizer of accelerate's ``AcceleratedOptimizer`` and
    Lightning's ``LightningOptimizer``: its step hooks fire on real steps only), or a clear error when it
    is not Adam/AdamW."""
    inner = getattr(optimizer, "optimizer", None)
    if not supports_preconditioning(optimizer) and supports_preconditioning(inner):
        optimizer = inner
    if not supports_preconditioning(optimizer):
        raise TypeError(f"optimizer-aware shares support Adam and AdamW, got {type(optimizer).__name__}; "
                        "pass optimizer=None to skip them")
    return optimizer


@torch.no_grad()
def adam_denominator(optimizer: torch.optim.Optimizer, group: dict, p: nn.Parameter, grad: Tensor) -> Tensor:
    """``sqrt(v̂_t) + ε`` of parameter ``p`` (in optimizer param group ``group``) for the coming step."""
    beta2, eps = group["betas"][1], group["eps"]
    if group.get("maximize"):  # Adam's order: negate, then add coupled decay
        grad = -grad
    decay = group.get("weight_decay", 0.0)
    if decay and not group.get("decoupled_weight_decay", isinstance(optimizer, torch.optim.AdamW)):
        grad = grad + decay * p
    state = optimizer.state.get(p, {})
    step = float(state["step"]) if "step" in state else 0.0
    v = grad.square().mul_(1 - beta2)
    if "exp_avg_sq" in state:
        v.add_(state["exp_avg_sq"], alpha=beta2)
    if group.get("amsgrad") and "max_exp_avg_sq" in state:
        v = torch.maximum(state["max_exp_avg_sq"], v)
    return v.div_(1 - beta2 ** (step + 1)).sqrt_().add_(eps)


@torch.no_grad()
def preconditioned_norms(
    optimizer: torch.optim.Optimizer, params: Sequence[nn.Parameter], groups: Sequence[int], n_groups: int,
    final_grads: Sequence[Optional[Tensor]], contributions: list[list[Optional[tuple[Tensor, float]]]],
    factors: Sequence[Optional[Tensor]], *, release: bool = False,
) -> np.ndarray:
    """``precond_norm[i, j] = sqrt(sum_{k in j} ||c_k A_ik / d_k||²)`` (NaN: no term in group j).

    ``params[k]`` belongs to group ``groups[k]`` (-1: not measured); ``final_grads[k]`` is G_t
    (None: not stepped); ``contributions[i][k] = (a, s)`` gives A_ik = s a (None: loss i does not
    reach parameter k); ``factors[k]`` is c_k (a 0-d tensor; None for 1). One parameter at a time,
    so only one denominator is alive at once; ``release`` drops each contribution once used.
    Parameters the optimizer does not hold are left out.
    """
    settings = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    n_losses = len(contributions)
    terms, cells = [], []
    present = np.zeros((n_losses, n_groups), dtype=bool)
    for k, p in enumerate(params):
        group = settings.get(id(p))
        if group is None or final_grads[k] is None or groups[k] < 0:
            continue
        denominator = adam_denominator(optimizer, group, p, final_grads[k])
        for i in range(n_losses):
            if contributions[i][k] is None:
                continue
            a, s = contributions[i][k]
            term = (a / denominator).square().sum(dtype=torch.float64) * (s * s)
            terms.append(term if factors[k] is None else term * factors[k].to(torch.float64).square())
            cells.append(i * n_groups + groups[k])
            present[i, groups[k]] = True
            if release:
                contributions[i][k] = None
        del denominator
    out = np.full((n_losses, n_groups), np.nan)
    if terms:
        device = terms[0].device
        totals = torch.zeros(n_losses * n_groups, dtype=torch.float64, device=device)
        totals.index_add_(0, torch.tensor(cells, device=device), torch.stack(terms))
        out = np.where(present, totals.sqrt().cpu().numpy().reshape(n_losses, n_groups), np.nan)
    return out
