"""Non-finite (NaN / inf) detection for the training step: name the culprit, stop early."""
from __future__ import annotations

import math
from typing import Iterable, Mapping

import torch
from torch import Tensor, nn


class NonFiniteLossError(FloatingPointError):
    """A loss, weighted loss or gradient became NaN / inf; names it and the step."""


def check_finite_losses(losses: Mapping[str, Tensor], weights: Mapping[str, float], step: int) -> None:
    """Raise :class:`NonFiniteLossError` for the first loss ``L`` or term ``w * L`` that is not finite."""
    for name, loss in losses.items():
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteLossError(f"loss {name!r} is {value} at step {step}")
        weighted = weights[name] * value
        if not math.isfinite(weighted):
            raise NonFiniteLossError(
                f"weighted loss {name!r} is {weighted} (weight {weights[name]}) at step {step}"
            )


def clip_and_check_gradients(named_parameters: Iterable[tuple[str, nn.Parameter]], max_norm: float | None,
                             step: int) -> float:
    """Clip the global gradient norm to ``max_norm`` (None: no clipping) and return it.

    Raises :class:`NonFiniteLossError` naming the first parameter whose gradient is not finite.
    """
    named = [(name, p) for name, p in named_parameters if p.grad is not None]
    norm = torch.nn.utils.get_total_norm([p.grad for _, p in named])
    if not torch.isfinite(norm):  # checked before clipping, which would spread the NaN to every grad
        culprit = next((name for name, p in named if not torch.isfinite(p.grad).all()), "?")
        raise NonFiniteLossError(f"gradient of parameter {culprit!r} is not finite at step {step}")
    if max_norm:
        torch.nn.utils.clip_grads_with_norm_([p for _, p in named], max_norm, norm)
    return float(norm)
