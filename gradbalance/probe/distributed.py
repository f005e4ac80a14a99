"""Data-parallel reduction of per-loss gradients.

Under DistributedDataParallel the gradient every rank applies is the mean over ranks,
``g = (1/R) sum_r g_r``. The probe therefore averages each loss's gradient across ranks *before*
taking norms (the norm of the mean, which is not the mean of the norms) and accumulates the
averaged gradients into ``.grad``, so ``.grad`` equals what DDP's own all-reduce would produce.
One flat all-reduce per loss, on probed steps only.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn


def world_size() -> int:
    """Number of data-parallel ranks (1 when torch.distributed is not initialised)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@torch.no_grad()
def average_across_ranks(
    grads: Sequence[Optional[Tensor]], params: Sequence[nn.Parameter]
) -> list[Optional[Tensor]]:
    """Mean over ranks of each gradient; a parameter no rank reached stays None (absent)."""
    ranks = world_size()
    if ranks == 1:
        return list(grads)
    device = next((g.device for g in grads if g is not None), params[0].device)
    present = torch.tensor([g is not None for g in grads], dtype=torch.int32, device=device)
    dist.all_reduce(present, op=dist.ReduceOp.MAX)
    reached = [i for i, flag in enumerate(present.tolist()) if flag]
    if not reached:
        return [None] * len(grads)
    flat = torch.cat([(grads[i] if grads[i] is not None else torch.zeros_like(params[i])).reshape(-1)
                      for i in reached])
    dist.all_reduce(flat)
    flat /= ranks
    out: list[Optional[Tensor]] = [None] * len(grads)
    offset = 0
    for i in reached:
        n = params[i].numel()
        out[i] = flat[offset:offset + n].view_as(params[i])
        offset += n
    return out
