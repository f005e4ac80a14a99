"""Training schedule: stage of a step, learning rate, and the per-batch rate coefficient.

ST-LIC trains one variable-rate model per bitrate range (QVRF, Tong et al., ICIP 2023): each
batch draws its rate coefficient log-uniformly from the config's range ``[lo, hi]``::

    ln lambda ~ U(ln lo, ln hi)

Patches grow from 256 to 512 in a second stage (the paper's progressive training); the learning
rate is 1e-4, then 1e-5 for fine-tuning.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

from stlic.training.config import OptimConfig, ScheduleConfig, Stage


class StageAt(NamedTuple):
    """The stage a step belongs to, its index and the step where it began."""

    index: int
    stage: Stage
    start: int


def stage_at(schedule: ScheduleConfig, step: int) -> StageAt:
    """Stage of 0-based ``step``; steps past the schedule stay in the last stage."""
    start = 0
    for index, stage in enumerate(schedule.stages):
        if step < start + stage.steps or index == len(schedule.stages) - 1:
            return StageAt(index, stage, start)
        start += stage.steps
    raise AssertionError("unreachable: the schedule has at least one stage")


def learning_rate(optim: OptimConfig, step: int) -> float:
    """``optim.lr`` before ``optim.finetune_step``, ``optim.finetune_lr`` from it on."""
    if optim.finetune_step is not None and step >= optim.finetune_step:
        return optim.finetune_lr
    return optim.lr


def discriminator_learning_rate(optim: OptimConfig, step: int) -> float:
    """``optim.disc_lr`` before ``optim.finetune_step``; from it on ``optim.disc_finetune_lr``, or
    (None) ``disc_lr`` dropped by the main learning rate's factor ``finetune_lr / lr``."""
    if optim.finetune_step is not None and step >= optim.finetune_step:
        if optim.disc_finetune_lr is not None:
            return optim.disc_finetune_lr
        return optim.disc_lr * optim.finetune_lr / optim.lr
    return optim.disc_lr


def sample_rate_lambda(low: float, high: float, generator: torch.Generator) -> float:
    """Log-uniform draw from [low, high] (``low`` itself when ``low == high``)."""
    if not 0 < low <= high:
        raise ValueError(f"need 0 < low <= high, got [{low}, {high}]")
    u = float(torch.rand((), generator=generator, dtype=torch.float64))
    return math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
