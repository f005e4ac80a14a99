"""Loss arithmetic in full precision under bf16 / fp16 autocast."""
from __future__ import annotations

import torch
from torch import Tensor


def upcast(x: Tensor) -> Tensor:
    """A reduced-precision tensor (an autocast output) cast to float32; others unchanged.

    The losses read network outputs in float32: unit normalisation (LPIPS), local variances
    p - m^2 (Wasserstein distortion) and softplus of logits (GAN) lose too much in bf16's 8-bit
    mantissa. float64 inputs stay float64.
    """
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x
