"""LALIC analysis / synthesis transforms and hyperprior (Feng et al., CVPR 2025, Fig. 2).

Stride-2 convolutions alternate with stages of Bi-RWKV blocks (linear attention)::

    g_a: conv5x5/2 3->N1, D1 blocks, conv3x3/2 ->N2, D2 blocks, conv3x3/2 ->N3, D3 blocks, conv3x3/2 ->M
    g_s: deconv3x3/2 M->N3, D3 blocks, deconv3x3/2 ->N2, D2 blocks, deconv3x3/2 ->N1, D1 blocks,
         deconv5x5/2 ->3
    h_a: conv5x5/2 M->N5, Dh blocks, conv5x5/2 ->Z
    h_s: deconv5x5/2 Z->N5, Dh blocks, deconv5x5/2 ->M

Paper sizes: (N1, N2, N3, M) = (96, 144, 256, 320), (D1, D2, D3) = (2, 4, 6), (N5, Z) = (256, 192),
Dh = 6. Each transform is an ``nn.Sequential`` with the official module order, so official
``g_a.<i>.*`` keys index the same layers (see ``stlic.models.lalic_keys``).
"""
from __future__ import annotations

from typing import Sequence

import torch.nn as nn

from stlic.layers.rwkv import BiRWKVBlock


def conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 2) -> nn.Conv2d:
    """Strided convolution with 'same' padding: H -> H / stride."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2)


def deconv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 2) -> nn.ConvTranspose2d:
    """Transposed convolution: H -> H * stride exactly (CompressAI's ``deconv``)."""
    return nn.ConvTranspose2d(
        in_channels, out_channels, kernel_size, stride=stride,
        padding=kernel_size // 2, output_padding=stride - 1,
    )


def _stages(
    resamplers: Sequence[nn.Module], widths: Sequence[int], depths: Sequence[int], hidden_rate: int
) -> list[nn.Module]:
    """resampler_0, blocks(width_0) x depth_0, resampler_1, ..., resampler_last."""
    layers: list[nn.Module] = []
    for resampler, width, depth in zip(resamplers, widths, depths):
        layers.append(resampler)
        layers.extend(BiRWKVBlock(width, hidden_rate=hidden_rate) for _ in range(depth))
    layers.extend(resamplers[len(widths):])
    return layers


class AnalysisTransform(nn.Sequential):
    """g_a: image (B, 3, H, W) -> latent y (B, M, H/16, W/16)."""

    def __init__(self, channels: Sequence[int], depths: Sequence[int], hidden_rate: int = 4) -> None:
        n1, n2, n3, m = channels
        convs = [conv(3, n1, 5), conv(n1, n2, 3), conv(n2, n3, 3), conv(n3, m, 3)]
        super().__init__(*_stages(convs, (n1, n2, n3), depths, hidden_rate))


class SynthesisTransform(nn.Sequential):
    """g_s: latent y_hat (B, M, H/16, W/16) -> image (B, 3, H, W)."""

    def __init__(self, channels: Sequence[int], depths: Sequence[int], hidden_rate: int = 4) -> None:
        n1, n2, n3, m = channels
        deconvs = [deconv(m, n3, 3), deconv(n3, n2, 3), deconv(n2, n1, 3), deconv(n1, 3, 5)]
        super().__init__(*_stages(deconvs, (n3, n2, n1), tuple(reversed(depths)), hidden_rate))


class HyperAnalysis(nn.Sequential):
    """h_a: y (B, M, h, w) -> z (B, Z, h/4, w/4)."""

    def __init__(self, latent_channels: int, channels: Sequence[int], depth: int, hidden_rate: int = 4) -> None:
        hidden, z_channels = channels
        convs = [conv(latent_channels, hidden, 5), conv(hidden, z_channels, 5)]
        super().__init__(*_stages(convs, (hidden,), (depth,), hidden_rate))


class HyperSynthesis(nn.Sequential):
    """h_s: z_hat (B, Z, h/4, w/4) -> hyper features (B, M, h, w) fed to the entropy model."""

    def __init__(self, latent_channels: int, channels: Sequence[int], depth: int, hidden_rate: int = 4) -> None:
        hidden, z_channels = channels
        deconvs = [deconv(z_channels, hidden, 5), deconv(hidden, latent_channels, 5)]
        super().__init__(*_stages(deconvs, (hidden,), (depth,), hidden_rate))
