"""Latent-conditioned PatchGAN discriminator (HiFiC, Mentzer et al., NeurIPS 2020, Sec. 3/A.1).

The quantised latent ``y_hat`` (B, M, H/16, W/16) is the condition::

    c      = LeakyReLU(conv3x3_{M->12}(y_hat))
    c_up   = nearest_upsample_x16(c)                           (B, 12, H, W)
    logits = PatchGAN([2x - 1, c_up])                          (B, 1, H/2^(n-1), W/2^(n-1))

PatchGAN = ``n_layers`` conv4x4 (stride 2, the last stride 1) with LeakyReLU(0.2), widths
``base * 2**i`` capped at ``8 * base``, then a 1x1 conv to one logit per patch.

ST-LIC ("Stable Training for Perception-Oriented Learned Image Compression") uses NO spectral
normalisation and NO gradient penalty: stability comes from balancing the gradients of the
losses on the refiner (the probed loss shares), not from constraining the discriminator. For the
ablation, ``spectral_norm=True`` normalises every convolution (Miyato et al., "Spectral
Normalization for GANs", ICLR 2018; as MS-ILLM, Muckley et al., ICML 2023): ``W / sigma(W)``
with ``sigma`` from one power iteration per forward (its vectors are buffers, so they resume).
``D(x) = sigmoid(logits)``; the losses (and the R1 penalty) live in :mod:`stlic.losses.adversarial`.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

#: channels of the projected latent condition (HiFiC uses 12)
CONDITION_CHANNELS = 12


class LatentConditionedDiscriminator(nn.Module):
    """PatchGAN on the image concatenated with the up-sampled, projected latent.

    Args:
        image_channels: channels of the image (3).
        latent_channels: channels M of the quantised latent ``y_hat``.
        base_channels: width of the first PatchGAN layer.
        n_layers: number of conv4x4 layers (``n_layers - 1`` of them halve the resolution).
        latent_stride: image size / latent size (16 for the LALIC transforms).
        spectral_norm: spectral normalisation of every convolution (off: ST-LIC's choice).

    Example:
        >>> d = LatentConditionedDiscriminator(latent_channels=8, base_channels=4, n_layers=3)
        >>> d(torch.rand(2, 3, 64, 32), torch.randn(2, 8, 4, 2)).shape
        torch.Size([2, 1, 16, 8])
    """

    def __init__(
        self,
        image_channels: int = 3,
        latent_channels: int = 320,
        base_channels: int = 64,
        n_layers: int = 4,
        latent_stride: int = 16,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        if min(image_channels, latent_channels, base_channels, n_layers, latent_stride) < 1:
            raise ValueError("LatentConditionedDiscriminator: all sizes must be positive integers")
        self.image_channels = image_channels
        self.latent_channels = latent_channels
        self.latent_stride = latent_stride
        self.latent_projection = nn.Conv2d(latent_channels, CONDITION_CHANNELS, 3, padding=1)
        layers: list[nn.Module] = []
        in_channels = image_channels + CONDITION_CHANNELS
        for index in range(n_layers):
            out_channels = base_channels * min(2**index, 8)
            last = index == n_layers - 1
            if last:  # stride 1, "same" size: pad 1 before and 2 after for the even kernel
                layers += [nn.ZeroPad2d((1, 2, 1, 2)), nn.Conv2d(in_channels, out_channels, 4)]
            else:
                layers.append(nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            in_channels = out_channels
        layers.append(nn.Conv2d(in_channels, 1, 1))
        self.patch_gan = nn.Sequential(*layers)
        if spectral_norm:
            from torch.nn.utils.parametrizations import spectral_norm as normalise

            for module in [self.latent_projection, *self.patch_gan]:
                if isinstance(module, nn.Conv2d):
                    normalise(module)

    def forward(self, image: Tensor, latent: Tensor) -> Tensor:
        """Logits map (B, 1, H / 2**(n_layers-1), W / 2**(n_layers-1)) for ``image`` in [0, 1]."""
        if image.dim() != 4 or image.shape[1] != self.image_channels:
            raise ValueError(
                f"discriminator image must be (B, {self.image_channels}, H, W), got {tuple(image.shape)}"
            )
        if latent.dim() != 4 or latent.shape[1] != self.latent_channels:
            raise ValueError(
                f"discriminator latent must be (B, {self.latent_channels}, h, w), got {tuple(latent.shape)}"
            )
        expected = tuple(size * self.latent_stride for size in latent.shape[-2:])
        if latent.shape[0] != image.shape[0] or tuple(image.shape[-2:]) != expected:
            raise ValueError(
                f"discriminator latent {tuple(latent.shape)} does not match image {tuple(image.shape)}: "
                f"expected same batch and image size = {self.latent_stride} x latent size"
            )
        condition = F.leaky_relu(self.latent_projection(latent), 0.2)
        condition = F.interpolate(condition, scale_factor=self.latent_stride, mode="nearest")
        return self.patch_gan(torch.cat([image * 2.0 - 1.0, condition], dim=1))
