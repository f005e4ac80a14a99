"""Data-parallel training under ``torchrun`` (or ``torch.multiprocessing.spawn``).

When ``WORLD_SIZE > 1`` the process group is initialised from the usual environment variables
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) with ``gloo`` on
CPU and ``nccl`` on CUDA. Each rank reads its own part of the sample stream; DDP averages the
gradients, so ``W`` ranks with batch ``B`` take the step of one process with batch ``W * B``.
Only rank 0 logs and writes checkpoints.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Mapping

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistributedContext:
    """Rank and world size of this process (``world_size == 1``: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | torch.device = "cpu") -> DistributedContext:
    """Join the process group described by the environment; a no-op when ``WORLD_SIZE <= 1``."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", os.environ["RANK"]))
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world_size)
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank)


def wrap_ddp(module: nn.Module, context: DistributedContext, ignore: Iterable[str] = ()) -> nn.Module:
    """``DistributedDataParallel(module)`` when distributed, else ``module`` itself.

    ``ignore`` names parameters DDP must not synchronise (e.g. entropy-bottleneck quantiles,
    trained by their own loss and averaged with :func:`all_reduce_grads`).
    """
    if not context.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ignored = list(ignore)
    if ignored:
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, ignored)
    device_ids = [context.local_rank] if next(module.parameters()).is_cuda else None
    return DistributedDataParallel(module, device_ids=device_ids)


def all_reduce_grads(parameters: Iterable[nn.Parameter], context: DistributedContext) -> None:
    """Average ``.grad`` of ``parameters`` over ranks (parameters DDP does not handle)."""
    if not context.enabled:
        return
    for parameter in parameters:
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad)
            parameter.grad /= context.world_size


def average_gradients_in_backward(module: nn.Module, context: DistributedContext) -> None:
    """Average each parameter's ``.grad`` over ranks as soon as backward accumulates it.

    For modules stepped by an optimizer we do not control (the discriminator inside
    :class:`stlic.losses.AdversarialLoss`); a no-op when not distributed.
    """
    if not context.enabled:
        return
    for parameter in module.parameters():
        if parameter.requires_grad:
            parameter.register_post_accumulate_grad_hook(lambda p: all_reduce_grads([p], context))


def any_rank(flag: bool, context: DistributedContext, device: str | torch.device = "cpu") -> bool:
    """True on every rank when ``flag`` is True on at least one (so all ranks stop together)."""
    if not context.enabled:
        return flag
    packed = torch.tensor([float(flag)], device=device)
    dist.all_reduce(packed, op=dist.ReduceOp.MAX)
    return bool(packed.item() > 0)


def all_reduce_mean(values: Mapping[str, float], context: DistributedContext,
                    device: str | torch.device = "cpu") -> dict[str, float]:
    """Mean over ranks of scalar ``values`` (identity when not distributed)."""
    if not context.enabled:
        return dict(values)
    keys = sorted(values)
    packed = torch.tensor([float(values[key]) for key in keys], dtype=torch.float64, device=device)
    dist.all_reduce(packed)
    packed /= context.world_size
    return dict(zip(keys, packed.tolist()))
