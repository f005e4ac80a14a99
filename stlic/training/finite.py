"""Non-finite (NaN / inf) detection for the training step: name the culprit, stop early.

Every step is checked; between logging steps the check runs on the device
(:class:`DeferredFiniteCheck`) so that training never waits for the host.
"""
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
                             step: int, check: bool = True) -> float | Tensor:
    """Clip the global gradient norm to ``max_norm`` (None: no clipping) and return it.

    ``check=True``: returns a float and raises :class:`NonFiniteLossError` naming the first
    parameter whose gradient is not finite (a host synchronisation). ``check=False``: returns the
    norm as a device tensor, for :class:`DeferredFiniteCheck`, and never reads it.
    """
    named = [(name, p) for name, p in named_parameters if p.grad is not None]
    if not named:
        return 0.0 if check else torch.zeros(())
    norm = torch.nn.utils.get_total_norm([p.grad for _, p in named])
    if check and not torch.isfinite(norm):  # checked before clipping, which would spread the NaN to every grad
        culprit = next((name for name, p in named if not torch.isfinite(p.grad).all()), "?")
        raise NonFiniteLossError(f"gradient of parameter {culprit!r} is not finite at step {step}")
    if max_norm:
        torch.nn.utils.clip_grads_with_norm_([p for _, p in named], max_norm, norm)
    return float(norm) if check else norm


class DeferredFiniteCheck:
    """Finiteness of the steps between two host reads, checked on the device.

    :meth:`record` adds one step's losses, weighted losses ``w * L`` and gradient norm to a
    running device-side flag (no host synchronisation); :meth:`first_error` reads the flag once
    and, only when something was not finite, finds the first culprit (same messages as
    :func:`check_finite_losses`; a gradient is named by its norm, the parameter is not known).
    """

    def __init__(self) -> None:
        self._finite: Tensor | None = None
        self._steps: list[tuple[int, dict[str, Tensor], dict[str, float], Tensor | None]] = []

    def record(self, step: int, losses: Mapping[str, Tensor], weights: Mapping[str, float],
               grad_norm: Tensor | None) -> None:
        values = {name: loss.detach().float().reshape(()) for name, loss in losses.items()}
        parts = list(values.values()) + [weights[name] * value for name, value in values.items()]
        if grad_norm is not None:
            parts.append(grad_norm.detach().float().reshape(()))
        flag = torch.isfinite(torch.stack(parts)).all()
        self._finite = flag if self._finite is None else self._finite & flag
        self._steps.append((step, values, dict(weights), grad_norm))

    def first_error(self) -> str | None:
        """The first non-finite value's description (None: all finite); forgets the recorded steps."""
        finite, steps = self._finite, self._steps
        self._finite, self._steps = None, []
        if finite is None or bool(finite):
            return None
        for step, values, weights, grad_norm in steps:
            for name, value in values.items():  # in float32, as the device computed them
                if not torch.isfinite(value):
                    return f"loss {name!r} is {float(value)} at step {step}"
                weighted = weights[name] * value
                if not torch.isfinite(weighted):
                    return f"weighted loss {name!r} is {float(weighted)} (weight {weights[name]}) at step {step}"
            if grad_norm is not None and not math.isfinite(float(grad_norm)):
                return f"gradient norm is {float(grad_norm)} at step {step}"
        return "a loss or gradient was not finite"  # unreachable: the flag and the values agree
