"""Hugging Face accelerate: the probe's backward with ``accelerator.backward``'s loss scaling.

``accelerator.backward(loss)`` divides the loss by ``gradient_accumulation_steps`` and, with fp16,
scales it by the accelerator's ``GradScaler``. :func:`accelerated_backward` does the same around
:meth:`GradientProbe.backward`, so ``.grad`` equals ``accelerator.backward(sum_i w_i L_i)`` while the
recorded norms stay those of the unscaled ``w_i L_i`` of the micro-batch::

    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    probe = GradientProbe(model, groups, optimizer=optimizer, every=10)   # every 10 optimizer steps
    for x in loader:
        with accelerator.accumulate(model), probe.no_sync_if_probing(model):
            losses = {"bpp": bpp(model(x)), "mse": ...}
            accelerated_backward(accelerator, probe, losses, {"bpp": 1.0, "mse": lmbda * 255 ** 2})
            optimizer.step(); optimizer.zero_grad()

An ``AcceleratedOptimizer`` is unwrapped by the probe; it steps the inner optimizer only when the
accumulated gradients are synchronized, so ``every`` counts real optimizer steps. DeepSpeed and
Megatron-LM run their own backward and are refused.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Optional

from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch import Tensor

from gradbalance.probe.loss_weights import Weight
from gradbalance.probe.gradient_probe import GradientProbe
from gradbalance.probe.stats import StepStats


def accelerated_backward(accelerator: Accelerator, probe: GradientProbe, losses: Mapping[str, Tensor],
                         weights: Optional[Mapping[str, Weight]] = None) -> Optional[StepStats]:
    """``accelerator.backward(sum_i w_i L_i)`` through ``probe`` (returns the probed step's stats, else None)."""
    if accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM):
        raise ValueError(f"accelerated_backward: {accelerator.distributed_type.value} runs its own backward; "
                         "the probe cannot take per-loss gradients inside it")
    if probe.scaler is not accelerator.scaler:
        probe.scaler = accelerator.scaler  # fp16: the accelerator's GradScaler, as accelerator.backward uses it
    return probe.backward(losses, weights, scale=1.0 / accelerator.gradient_accumulation_steps)
