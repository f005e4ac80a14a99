"""UNet refiner of ST-LIC: a residual post-filter on the decoder output.

ST-LIC (Sec. III) splits the decoder side into the main network, trained with distortion
losses on its output ``x_hat``, and a refiner trained with the perceptual losses (LPIPS,
Wasserstein distortion, GAN) on ``x_refined = R(x_hat)``. The refiner is a UNet
(Ronneberger et al., MICCAI 2015) used residually::

    x_refined = x_hat + head(unet(x_hat)),    head = 1x1 conv initialised to zero,

so the refiner starts as the identity and the first perceptual gradients cannot destroy the
decoder's reconstruction.

Size. The paper does not publish the refiner's widths. We use ``base_channels=64``, ``depth=4``
(four 2x down-samplings, the deepest level at H/16 = the latent resolution of the main network)
and widths 64-128-256-256-256 (capped at ``4 * base_channels``), giving ~7.8M parameters:
a fraction of the main network, yet with a receptive field that covers a
latent block (16 px) several times over, which the texture synthesis of the GAN loss needs.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor


class _DoubleConv(nn.Sequential):
    """conv3x3 -> LeakyReLU -> conv3x3 -> LeakyReLU (no normalisation: batch statistics of
    small crops would shift the colours of the refined image)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        )


class _Up(nn.Module):
    """Nearest 2x up-sampling + conv1x1 to the skip width, concatenation, then a double conv.

    (Nearest + conv instead of a transposed conv avoids checkerboard artefacts, Odena et al. 2016.)
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(in_channels, skip_channels, 1),
            nn.LeakyReLU(0.2, inplace=True),
        )
        self.fuse = _DoubleConv(2 * skip_channels, out_channels)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        return self.fuse(torch.cat([self.up(x), skip], dim=1))


def unet_widths(base_channels: int, depth: int) -> list[int]:
    """Channel width of each resolution level 0..depth (level ``depth`` = bottleneck).

    ``width_i = base * 2**i`` capped at ``4 * base``; the bottleneck keeps the cap.
    """
    return [base_channels * min(2**level, 4) for level in range(depth + 1)]


class UNetRefiner(nn.Module):
    """Residual UNet refiner ``x -> x + head(unet(x))`` on (B, 3, H, W) images in [0, 1].

    Args:
        base_channels: width of the full-resolution level.
        depth: number of 2x down-samplings; H and W must be multiples of ``2**depth``.

    The output is not clamped (clamping would cut the gradients of the perceptual losses);
    clamp to [0, 1] when writing an image.

    Example:
        >>> refiner = UNetRefiner(base_channels=8, depth=2)
        >>> x = torch.rand(1, 3, 32, 32)
        >>> torch.equal(refiner(x), x)   # identity at initialisation
        True
    """

    def __init__(self, base_channels: int = 64, depth: int = 4) -> None:
        super().__init__()
        if base_channels < 1 or depth < 1:
            raise ValueError(
                f"UNetRefiner needs base_channels >= 1 and depth >= 1, got {base_channels}, {depth}"
            )
        self.base_channels = base_channels
        self.depth = depth
        widths = unet_widths(base_channels, depth)
        self.stem = _DoubleConv(3, widths[0])
        self.down = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(widths[i + 1], widths[i + 1], 3, padding=1),
                nn.LeakyReLU(0.2, inplace=True),
            )
            for i in range(depth)
        )
        self.up = nn.ModuleList(
            _Up(widths[i + 1], widths[i], widths[i]) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], 3, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @property
    def size_multiple(self) -> int:
        """H and W of the input must be multiples of this (``2**depth``)."""
        return 2**self.depth

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"UNetRefiner expects a (B, 3, H, W) image batch, got shape {tuple(x.shape)}")
        height, width = x.shape[-2:]
        if height % self.size_multiple or width % self.size_multiple:
            raise ValueError(
                f"UNetRefiner(depth={self.depth}) needs H and W multiples of {self.size_multiple}, "
                f"got {height}x{width}; pad the image first"
            )
        if not torch.is_grad_enabled():  # inference: oneDNN's convolutions run ~5% faster on NHWC
            x = x.contiguous(memory_format=torch.channels_last)
        features = self.stem(x * 2.0 - 1.0)
        skips = []
        for down in self.down:
            skips.append(features)
            features = down(features)
        for up in self.up:
            features = up(features, skips.pop())
        return x + self.head(features)
