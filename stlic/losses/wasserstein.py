"""Wasserstein distortion (Qiu, Wagner, Balle, Theis, "Wasserstein Distortion: Unifying Fidelity
and Realism", CISS 2024, arXiv:2310.03629), as used as a training loss by Balle et al. (CVPR 2025).

For a feature map f (B, C, H, W) the local statistics pyramid is, for levels l = 1..L,

    m_l = lowpass(f_{l-1}),  p_l = lowpass(s_{l-1}),  nu_l = sqrt(relu(p_l - m_l^2)),
    f_l = m_l[::2, ::2],     s_l = p_l[::2, ::2],     with f_0 = f, s_0 = f^2,

``lowpass`` = separable [1/4, 1/2, 1/4] filter with *replicate* padding (constant maps stay
constant; the authors' code pads with zeros, which biases border statistics). As in the authors'
code, level l's statistics are taken before decimation, so level 1 keeps the full resolution and
level l lives at resolution 2^-(l-1). The distance maps are

    W_0 = (f^a - f^b)^2,   W_l = (m_l^a - m_l^b)^2 + (nu_l^a - nu_l^b)^2   (l >= 1),

weighted per position by w_l = relu(1 - |log2 sigma - l|), where the log2-sigma map is carried to
level l's resolution by the same lowpass-and-decimate. Per feature map:

    WD(f^a, f^b) = sum_l mean_{c,h,w}(w_l * W_l).

log2 sigma = 0 gives the feature MSE; large sigma compares only local means and standard
deviations (texture statistics), so realistic re-synthesised texture is not penalised.

Image-level loss (:class:`WassersteinDistortion`): the features are the ImageNet-normalised image
plus VGG-16 relu1_2..relu5_3 at three image scales (full, /2, /4; 2x2 area downsampling), and the
total is the *sum* over these 1 + 5 * 3 maps (the authors' convention). The sigma map is given at
image resolution; for a feature map with size ratio r to the image it becomes
relu(resize(log2 sigma) - log2 r), since each feature position covers r image pixels.
"""
from __future__ import annotations

import math
import os
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .vgg import BackboneChoice, VGG16FeatureExtractor

_LOWPASS_TAPS = (0.25, 0.5, 0.25)


class LocalStatistics(NamedTuple):
    """Local means and standard deviations, one (B, C, h_l, w_l) map per level l = 1..L."""

    means: list[Tensor]
    stds: list[Tensor]


class _SqrtBoundedGrad(torch.autograd.Function):
    """sqrt(relu(v)) whose derivative 1 / (2 sqrt v) is capped at ``limit`` (finite at v = 0)."""

    @staticmethod
    def forward(ctx, variance: Tensor, limit: float) -> Tensor:
        std = variance.clamp_min(0).sqrt()
        ctx.save_for_backward(std)
        ctx.limit = limit
        return std

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (std,) = ctx.saved_tensors
        return grad * (0.5 / std).clamp_max(ctx.limit), None


def lowpass(x: Tensor, stride: int = 1) -> Tensor:
    """Separable [1/4, 1/2, 1/4] filter per channel, replicate padding, then stride.

    Written as shifted sums rather than a depthwise convolution: same result, and it avoids the
    thread-pool stalls grouped convolutions show on busy CPUs.
    """
    a, b, c = _LOWPASS_TAPS
    x = F.pad(x, (1, 1, 1, 1), mode="replicate")
    x = a * x[..., :, :-2] + b * x[..., :, 1:-1] + c * x[..., :, 2:]
    x = a * x[..., :-2, :] + b * x[..., 1:-1, :] + c * x[..., 2:, :]
    return x[..., ::stride, ::stride]


def local_statistics(features: Tensor, num_levels: int, sqrt_grad_limit: float = 1e6) -> LocalStatistics:
    """The local mean / standard-deviation pyramid of ``features`` (formula in the module doc)."""
    channels = features.shape[1]
    moments = torch.cat([features, features.square()], dim=1)  # filter f and f^2 in one pass
    means, stds = [], []
    for _ in range(num_levels):
        moments = lowpass(moments)
        mean, second = moments[:, :channels], moments[:, channels:]
        means.append(mean)
        stds.append(_SqrtBoundedGrad.apply(second - mean.square(), sqrt_grad_limit))
        moments = moments[..., ::2, ::2]
    return LocalStatistics(means, stds)


def _check_log2_sigma(log2_sigma: Tensor | float, num_levels: int) -> None:
    top = float(log2_sigma.max()) if isinstance(log2_sigma, Tensor) else float(log2_sigma)
    bottom = float(log2_sigma.min()) if isinstance(log2_sigma, Tensor) else float(log2_sigma)
    if bottom < 0 or top > num_levels:
        raise ValueError(
            f"log2_sigma must lie in [0, num_levels={num_levels}], got values in [{bottom}, {top}]"
        )


def wasserstein_distortion(
    features_a: Tensor,
    features_b: Tensor,
    log2_sigma: Tensor | float,
    num_levels: int = 5,
    sqrt_grad_limit: float = 1e6,
) -> Tensor:
    """WD between two feature maps (B, C, H, W), one value per image, shape (B,).

    ``log2_sigma`` is a float or a map broadcastable to (B, 1, H, W) with values in
    [0, num_levels].
    """
    if features_a.shape != features_b.shape or features_a.dim() != 4:
        raise ValueError(
            f"feature maps must be (B, C, H, W) of equal shape, got {tuple(features_a.shape)} "
            f"and {tuple(features_b.shape)}"
        )
    _check_log2_sigma(log2_sigma, num_levels)
    return _checked_wasserstein_distortion(features_a, features_b, log2_sigma, num_levels, sqrt_grad_limit)


def _checked_wasserstein_distortion(
    features_a: Tensor, features_b: Tensor, log2_sigma: Tensor | float, num_levels: int, sqrt_grad_limit: float
) -> Tensor:
    """:func:`wasserstein_distortion` on arguments already validated (no host sync per call)."""
    if isinstance(log2_sigma, Tensor):
        log2_sigma = log2_sigma.to(features_a).expand(features_a.shape[0], 1, *features_a.shape[-2:])
    else:  # levels above floor(sigma) + 1 have zero weight everywhere: skip their statistics
        num_levels = min(num_levels, math.floor(log2_sigma) + 1)
    batch = features_a.shape[0]
    stats = local_statistics(torch.cat([features_a, features_b]), num_levels, sqrt_grad_limit)
    distance_maps = [(features_a - features_b).square()] + [
        (mean[:batch] - mean[batch:]).square() + (std[:batch] - std[batch:]).square()
        for mean, std in zip(stats.means, stats.stds)
    ]
    total = features_a.new_zeros(features_a.shape[0])
    for level, distance in enumerate(distance_maps):
        if isinstance(log2_sigma, Tensor):
            if level >= 2:  # level l >= 1 lives at resolution 2^-(l-1)
                log2_sigma = lowpass(log2_sigma, stride=2)
            weight = F.relu(1 - (log2_sigma - level).abs())
            total = total + (weight * distance).mean(dim=(1, 2, 3))
        else:
            weight = max(0.0, 1 - abs(log2_sigma - level))
            if weight > 0:
                total = total + weight * distance.mean(dim=(1, 2, 3))
    return total


def _sigma_for(log2_sigma: Tensor | float, image_size: tuple[int, int], feature: Tensor) -> Tensor | float:
    """The image-resolution sigma map carried to ``feature``'s grid (see module doc)."""
    ratio = sum(math.log2(i / f) for i, f in zip(image_size, feature.shape[-2:])) / 2
    if not isinstance(log2_sigma, Tensor):
        return max(0.0, log2_sigma - ratio)
    resized = F.interpolate(log2_sigma, size=feature.shape[-2:], mode="bilinear", antialias=True)
    return F.relu(resized - ratio)


class WassersteinDistortion(nn.Module):
    """Image-level Wasserstein distortion on VGG-16 features, mean over the batch.

    Args:
        log2_sigma: default summarisation scale (log2 of the pooling width in image pixels);
            2.0 is our assumption, the ST-LIC paper does not state it. Overridable per call
            with a float or a (B or 1, 1, h, w) map in image pixels (resized to each feature).
        num_levels: statistics levels L (log2 sigma may range over [0, L]).
        num_scales: image scales the VGG features are computed at (full, /2, /4, ...).
        backbone: a :class:`VGG16FeatureExtractor` to share; else one is built from
            ``weights_path`` / ``vgg_backbone`` with average pooling (the authors' choice).
    """

    def __init__(
        self,
        log2_sigma: float = 2.0,
        num_levels: int = 5,
        num_scales: int = 3,
        backbone: VGG16FeatureExtractor | None = None,
        weights_path: str | os.PathLike | None = None,
        vgg_backbone: BackboneChoice = "auto",
        sqrt_grad_limit: float = 1e6,
    ) -> None:
        super().__init__()
        _check_log2_sigma(log2_sigma, num_levels)
        if num_scales < 1:
            raise ValueError(f"num_scales must be >= 1, got {num_scales}")
        self.backbone = backbone or VGG16FeatureExtractor(weights_path, vgg_backbone, average_pooling=True)
        self.backbone_name = self.backbone.backbone_name
        self.log2_sigma, self.num_levels, self.num_scales = log2_sigma, num_levels, num_scales
        self.sqrt_grad_limit = sqrt_grad_limit

    @property
    def min_image_size(self) -> int:
        """Smallest image side for which the coarsest scale still fits the backbone."""
        return self.backbone.min_input_size * 2 ** (self.num_scales - 1)

    def features(self, x: Tensor) -> list[Tensor]:
        """Normalised image, then relu1_2..relu5_3 at each of ``num_scales`` image scales."""
        features = [(x - self.backbone.mean) / self.backbone.std]
        for scale in range(self.num_scales):
            if scale > 0:
                x = F.avg_pool2d(x, kernel_size=2)
            features.extend(self.backbone(x))
        return features

    def per_image(self, x: Tensor, y: Tensor, log2_sigma: Tensor | float | None = None) -> Tensor:
        """WD of each pair of [0, 1] images, shape (B,)."""
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(
                f"expected two RGB batches of equal shape (B, 3, H, W), got "
                f"{tuple(x.shape)} and {tuple(y.shape)}"
            )
        if min(x.shape[-2:]) < self.min_image_size:
            raise ValueError(
                f"images of {tuple(x.shape[-2:])} pixels are too small for num_scales="
                f"{self.num_scales} on {self.backbone_name}: each side needs at least "
                f"{self.min_image_size} pixels; lower num_scales"
            )
        log2_sigma = self.log2_sigma if log2_sigma is None else log2_sigma
        _check_log2_sigma(log2_sigma, self.num_levels)
        batch = x.shape[0]
        if isinstance(log2_sigma, Tensor) and (
            log2_sigma.dim() != 4 or log2_sigma.shape[1] != 1 or log2_sigma.shape[0] not in (1, batch)
        ):
            raise ValueError(f"a log2_sigma map must be ({batch} or 1, 1, h, w), got {tuple(log2_sigma.shape)}")
        both = self.features(torch.cat([x, y]))
        total = x.new_zeros(batch)
        for feature in both:
            sigma = _sigma_for(log2_sigma, tuple(x.shape[-2:]), feature)
            total = total + _checked_wasserstein_distortion(
                feature[:batch], feature[batch:], sigma, self.num_levels, self.sqrt_grad_limit
            )
        return total

    def forward(self, x: Tensor, y: Tensor, log2_sigma: Tensor | float | None = None) -> Tensor:
        return self.per_image(x, y, log2_sigma).mean()
