"""Checkerboard context (He et al., "Checkerboard Context Model for Efficient Learned Image
Compression", CVPR 2021), as used per channel group by ELIC / LALIC.

Latent positions split in two passes: the *anchors* ``(i + j) % 2 == 0`` are coded first with
no spatial context; the *non-anchors* ``(i + j) % 2 == 1`` then see the decoded anchors through
a masked convolution whose kernel keeps only the taps at odd offsets ``(di + dj) % 2 == 1``
(for every non-anchor those neighbours are anchors)::

    ■ □ ■ □      ■ anchor (pass 0)
    □ ■ □ ■      □ non-anchor (pass 1)
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

ANCHOR, NON_ANCHOR = 0, 1
PASSES = (ANCHOR, NON_ANCHOR)


def checkerboard_mask(height: int, width: int, step: int, device: torch.device | None = None) -> Tensor:
    """Boolean (1, 1, height, width) mask of the positions coded in ``step`` (ANCHOR or NON_ANCHOR)."""
    if step not in PASSES:
        raise ValueError(f"checkerboard step must be ANCHOR (0) or NON_ANCHOR (1), got {step!r}")
    rows = torch.arange(height, device=device).view(height, 1)
    cols = torch.arange(width, device=device).view(1, width)
    return ((rows + cols) % 2 == step).view(1, 1, height, width)


class CheckerboardMaskedConv2d(nn.Conv2d):
    """Conv2d whose kernel sees only the anchors around a non-anchor position.

    ``mask[..., di, dj] = (di + dj) % 2 == 1`` for an odd square kernel (the centre and every
    even offset are zeroed). The mask is a buffer, so it is saved like CompressAI's
    ``CheckerboardMaskedConv2d`` and official LALIC checkpoints load into it unchanged.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 5, **kwargs: Any) -> None:
        if kernel_size % 2 != 1:
            raise ValueError(f"checkerboard context needs an odd kernel size, got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, **kwargs)
        offsets = torch.arange(kernel_size)
        taps = (offsets.view(-1, 1) + offsets.view(1, -1)) % 2 == 1
        self.register_buffer("mask", taps.to(self.weight.dtype).expand_as(self.weight).clone())

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)
