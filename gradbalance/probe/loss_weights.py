"""Loss weights of one backward call: plain numbers, or tensors that are themselves trained.

A weight may be a tensor that requires grad, e.g. uncertainty weighting (Kendall, Gal & Cipolla,
"Multi-Task Learning Using Uncertainty to Weigh Losses", CVPR 2018) with ``w_i = exp(-s_i)`` and a
learnable ``s_i``. The objective ``Σ_i w_i L_i`` then has, besides ``w_i ∂L_i/∂θ`` (what the probe
measures and accumulates), the term ``∂(w_i L_i)/∂w_i = L_i``, back-propagated from each weight into
whatever it was computed from (``s_i``), so ``.grad`` is the gradient of the plain
``Σ_i w_i L_i`` on probed and unprobed steps alike. The probe records the weight's value at the step.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable, Union

import numpy as np
import torch
from torch import Tensor

Weight = Union[float, Tensor]


@dataclass(frozen=True)
class CallWeights:
    """The weights of one call: ``values[i]`` as a float, ``terms[i]`` as given (a tensor that
    requires grad stays one; anything else is the float)."""

    values: list[float]
    terms: list[Weight]

    @property
    def learnable(self) -> bool:
        """Whether any weight requires grad."""
        return any(isinstance(t, Tensor) and t.requires_grad for t in self.terms)


def check_weight(name: str, weight: object) -> Weight:
    """A finite scalar weight (a tensor requiring grad is kept as a 0-d tensor), else an error naming it."""
    if isinstance(weight, Tensor):
        if weight.numel() != 1:
            raise ValueError(f"weight of loss {name!r} must be a scalar, got shape {tuple(weight.shape)}")
        value = float(weight.detach())
        kept: Weight = weight.reshape(()) if weight.requires_grad else value
    else:
        try:
            value = float(weight)
        except (TypeError, ValueError):
            raise ValueError(f"weight of loss {name!r} must be a number, got {type(weight).__name__}") from None
        kept = value
    if not np.isfinite(value):
        raise ValueError(f"weight of loss {name!r} is not finite: {value}")
    return kept


def call_weights(names: Sequence[str], weights: dict) -> CallWeights:
    """Checked weights of ``names`` (1 where missing)."""
    terms = [check_weight(name, weights.get(name, 1.0)) for name in names]
    return CallWeights([float(t.detach()) if isinstance(t, Tensor) else t for t in terms], terms)


def backward_into_weights(weights: CallWeights, losses: Sequence[Tensor], scaled: Callable[[Tensor], Tensor]) -> None:
    """Back-propagate ``Σ_i w_i · stopgrad(L_i)`` into the learnable weights: ``∂/∂w_i = L_i``.

    ``scaled`` applies the call's loss scaling (GradScaler, accumulation), as for the losses.
    """
    terms = [t * loss.detach() for t, loss in zip(weights.terms, losses) if isinstance(t, Tensor) and t.requires_grad]
    if terms:
        scaled(torch.stack(terms).sum()).backward()
