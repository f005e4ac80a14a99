"""LPIPS and Wasserstein distortion of one image pair, sharing one VGG-16 pass when they can.

ST-LIC's refiner is trained on LPIPS(x_ref, x) + WD(x, x_ref) (Table II). With the offline
default both read the same network, the anti-aliased VGG-16 trunk of ST-LPIPS (Ghildyal & Liu,
ECCV 2022), loaded from the same file. Then each image goes through that trunk once:

* the input is ST-LPIPS' own ``(2x - 1 - shift) / scale``. It is the same affine map as WD's
  ImageNet normalisation ``(x - mean) / std`` (shift = 1 - 2 mean = (-.030, -.088, -.188),
  scale = 2 std = (.458, .448, .450)), evaluated in LPIPS' order: LPIPS is bit-identical to
  :class:`LPIPSLoss` alone, and WD's five full-scale taps differ from its own pass by float
  rounding only (WD's image map and extra scales keep the ImageNet form);
* the real image runs without autograd, so the backward pass covers the refined image only.

Otherwise (``lpips`` package, AlexNet, or an ImageNet VGG-16 for WD, which uses average
pooling) the two losses run their own backbones, each still without autograd on the real image.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from .lpips import LPIPSLoss
from .wasserstein import WassersteinDistortion


class PerceptualValues(NamedTuple):
    """Mean LPIPS and mean Wasserstein distortion over the batch."""

    lpips: Tensor
    wasserstein: Tensor


def _same_trunk(lpips: LPIPSLoss, wasserstein: WassersteinDistortion) -> bool:
    """True when LPIPS' backbone and WD's compute the same function (same layers, same tensors)."""
    if (lpips.source, lpips.net, wasserstein.backbone_name) != ("stlpips", "vgg", "stlpips-vgg16-antialiased"):
        return False
    ours = list(wasserstein.backbone.layers.state_dict().values())
    theirs = list(lpips.model.net.state_dict().values())
    return len(ours) == len(theirs) and all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(ours, theirs))


class PerceptualLosses(nn.Module):
    """``forward(x_test, x_real)`` -> :class:`PerceptualValues` (LPIPS, WD), one VGG pass per image.

    Args:
        lpips: the LPIPS loss.
        wasserstein: the Wasserstein distortion; its backbone is the one run when shared.

    ``shared`` says whether the pass is shared (see the module doc).
    """

    def __init__(self, lpips: LPIPSLoss, wasserstein: WassersteinDistortion) -> None:
        super().__init__()
        self.lpips, self.wasserstein = lpips, wasserstein
        self.shared = _same_trunk(lpips, wasserstein)

    def forward(self, x_test: Tensor, x_real: Tensor) -> PerceptualValues:
        if not self.shared:
            return PerceptualValues(self.lpips(x_test, x_real), self.wasserstein(x_real, x_test))
        trunk = self.wasserstein.backbone
        self.wasserstein.check_inputs(x_real, x_test, self.wasserstein.log2_sigma)
        with torch.set_grad_enabled(torch.is_grad_enabled() and x_real.requires_grad):
            taps_real = trunk.taps_of_normalised(self.lpips.normalise_input(x_real))
        with torch.set_grad_enabled(torch.is_grad_enabled() and x_test.requires_grad):
            taps_test = trunk.taps_of_normalised(self.lpips.normalise_input(x_test))
        lpips = self.lpips.distance_from_taps(taps_test, taps_real).mean()
        wasserstein = self.wasserstein.per_image(x_real, x_test, full_scale_taps=(taps_real, taps_test)).mean()
        return PerceptualValues(lpips, wasserstein)
