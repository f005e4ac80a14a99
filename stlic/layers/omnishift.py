"""OmniShift: re-parameterisable multi-scale depthwise token shift (RestoreRWKV / LALIC).

    OmniShift(x) = a0 * x + a1 * DW1x1(x) + a2 * DW3x3(x) + a3 * DW5x5(x)

(Yang et al., "Restore-RWKV", 2024; Feng et al., "Linear Attention Modeling for Learned Image
Compression", CVPR 2025, Sec. 3). All four branches are linear and depthwise, so for inference
they fold into ONE depthwise 5x5 convolution whose kernel is the alpha-weighted sum of the
zero-padded kernels (identity = a centred one). Training runs that single convolution too,
with the kernel rebuilt differentiably from the branch weights at every call (same function,
one conv instead of three); ``reparameterise()`` caches the kernel for eval mode and
``train()`` drops the cache.

In float64 (the codec's entropy-parameter path, ``stlic.models.parameter_path``) the depthwise
convolution is computed as 25 shifted multiply-adds: PyTorch has no vectorised float64 depthwise
convolution on CPU and loops over the C groups (8235 calls, 1.65 s of a 3.7 s float64 coding pass
of the full preset at 768x512; the shifted sums take milliseconds).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = ["OmniShift", "depthwise_by_shifts"]

_KERNEL = 5


class OmniShift(nn.Module):
    """Learned mix of identity and depthwise 1x1 / 3x3 / 5x5 convolutions on (B, C, H, W)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"OmniShift needs dim >= 1, got {dim}")
        self.dim = dim
        self.conv1x1 = nn.Conv2d(dim, dim, 1, groups=dim, bias=False)
        self.conv3x3 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=False)
        self.conv5x5 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim, bias=False)
        self.alpha = nn.Parameter(torch.randn(4))  # identity, 1x1, 3x3, 5x5; N(0,1) as in LALIC
        self._fused_weight: Tensor | None = None  # not a buffer: never enters the state_dict
        self.register_load_state_dict_post_hook(OmniShift._drop_fused_weight)

    @staticmethod
    def _drop_fused_weight(module: "OmniShift", incompatible_keys) -> None:
        module._fused_weight = None  # new weights: a cached kernel would be stale

    def fused_weight(self) -> Tensor:
        """The single depthwise 5x5 kernel (C, 1, 5, 5) equal to the four branches."""
        identity = torch.zeros_like(self.conv5x5.weight)
        identity[:, :, _KERNEL // 2, _KERNEL // 2] = 1.0
        a0, a1, a2, a3 = self.alpha
        return (
            a0 * identity
            + a1 * F.pad(self.conv1x1.weight, (2, 2, 2, 2))
            + a2 * F.pad(self.conv3x3.weight, (1, 1, 1, 1))
            + a3 * self.conv5x5.weight
        )

    @torch.no_grad()
    def reparameterise(self) -> "OmniShift":
        """Cache the folded 5x5 kernel for eval mode (dropped by ``train()`` and by loading a
        state_dict; call again after editing weights in place while in eval mode)."""
        self._fused_weight = self.fused_weight().detach().clone()
        return self

    def train(self, mode: bool = True) -> "OmniShift":
        if mode:
            self._fused_weight = None  # weights will change: the fused kernel would go stale
        return super().train(mode)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.dim:
            raise ValueError(f"OmniShift({self.dim}) expects (B, {self.dim}, H, W), "
                             f"got {tuple(x.shape)}")
        if self._fused_weight is not None and not self.training:
            weight = self._fused_weight.to(device=x.device, dtype=x.dtype)
        else:  # one 5x5 conv with the differentiable folded kernel: cheaper than four branches
            weight = self.fused_weight()
        if x.dtype == torch.float64:
            return depthwise_by_shifts(x, weight)
        return F.conv2d(x, weight, padding=_KERNEL // 2, groups=self.dim)


def depthwise_by_shifts(x: Tensor, weight: Tensor) -> Tensor:
    """Depthwise 'same' convolution ``out[c, i, j] = sum_{a,b} w[c, a, b] x[c, i + a - p, j + b - p]``
    (zero padding p = K // 2, odd K) as K^2 shifted multiply-adds, in a fixed order."""
    size = weight.shape[-1]
    pad = size // 2
    height, width = x.shape[-2:]
    padded = F.pad(x, (pad, pad, pad, pad))
    taps = weight.reshape(1, -1, size, size)
    out = padded[..., :height, :width] * taps[..., :1, 0:1]
    for row in range(size):
        for col in range(size):
            if row or col:
                out = out.addcmul(padded[..., row:row + height, col:col + width], taps[..., row:row + 1, col:col + 1])
    return out
