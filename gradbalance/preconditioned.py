"""Optimizer-aware norms: the size of each loss's contribution to the Adam/AdamW *update*.

Adam (Kingma & Ba, 2015) moves a parameter by ``lr * m̂ / (sqrt(v̂) + ε)``; the first moment is a
linear function of the gradient, so loss i contributes ``(1-β1)/(1-β1^t) * w_i g_i / (sqrt(v̂_t)+ε)``
to this step's update. The common factor ``(1-β1)/(1-β1^t)`` does not change shares and is dropped:

    precond_norm_ij = || w_i g_ij / (sqrt(v̂_t) + ε) ||,
    v_t = β2 v_{t-1} + (1-β2) G_t²,   v̂_t = v_t / (1 - β2^t)   (amsgrad: max(v_max, v_t))

where G_t is the full (unscaled) gradient Adam will see at this step, including coupled weight decay
(Adam with ``weight_decay``; AdamW decays decoupled). The state is read from ``optimizer.state``
before the step, so the denominator is exactly the one ``optimizer.step()`` is about to use.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
from torch import Tensor, nn


def supports_preconditioning(optimizer: object) -> bool:
    """Whether optimizer-aware norms can be computed for ``optimizer`` (Adam, AdamW)."""
    return isinstance(optimizer, torch.optim.Adam)  # AdamW subclasses Adam


def check_optimizer(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """``optimizer`` itself, or a clear error when it is not Adam/AdamW."""
    if not supports_preconditioning(optimizer):
        raise TypeError(f"optimizer-aware shares support Adam and AdamW, got {type(optimizer).__name__}; "
                        "pass optimizer=None to skip them")
    return optimizer


@torch.no_grad()
def adam_denominators(
    optimizer: torch.optim.Optimizer, params: Sequence[nn.Parameter], total_grads: Sequence[Optional[Tensor]]
) -> list[Optional[Tensor]]:
    """``sqrt(v̂_t) + ε`` per parameter for the coming Adam step (None: not optimized or no gradient).

    ``total_grads`` are the unscaled gradients G_t that ``optimizer.step()`` will see.
    """
    settings = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    decoupled_default = isinstance(optimizer, torch.optim.AdamW)
    out: list[Optional[Tensor]] = []
    for p, grad in zip(params, total_grads):
        group = settings.get(id(p))
        if group is None or grad is None:
            out.append(None)
            continue
        beta2, eps = group["betas"][1], group["eps"]
        decay = group.get("weight_decay", 0.0)
        if decay and not group.get("decoupled_weight_decay", decoupled_default):
            grad = grad + decay * p
        state = optimizer.state.get(p, {})
        step = float(state["step"]) if "step" in state else 0.0
        v = grad.square() * (1 - beta2)
        if "exp_avg_sq" in state:
            v = v + beta2 * state["exp_avg_sq"]
        if group.get("amsgrad") and "max_exp_avg_sq" in state:
            v = torch.maximum(state["max_exp_avg_sq"], v)
        out.append((v / (1 - beta2 ** (step + 1))).sqrt() + eps)
    return out


def preconditioned_group_norm(
    grads: Sequence[Optional[Tensor]], denominators: Sequence[Optional[Tensor]], weight: float
) -> Tensor:
    """``|| w g / d ||`` over the parameters with both a gradient and a denominator (NaN if none)."""
    terms = [(g / d).square().sum() for g, d in zip(grads, denominators) if g is not None and d is not None]
    if not terms:
        return torch.tensor(float("nan"), dtype=torch.float64)
    return torch.stack(terms).sum().to(torch.float64).sqrt() * abs(weight)
