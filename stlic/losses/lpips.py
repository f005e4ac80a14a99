"""LPIPS and shift-tolerant LPIPS as a loss on images in [0, 1].

LPIPS (Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric",
CVPR 2018):  d(x, y) = sum_l mean_hw sum_c w_lc (u^l_x - u^l_y)_c^2,  u^l = f^l / |f^l|_channels,
with backbone features f^l unit-normalised over channels and learned non-negative weights w_l.

Sources:

* ``"stlpips"`` (offline default): ST-LPIPS (Ghildyal & Liu, ECCV 2022) from ``stlpips-pytorch``,
  anti-aliased backbone and linear weights shipped in its wheel. ``metric_name`` "ST-LPIPS(vgg)".
* ``"lpips"``: the ``lpips`` package. Its linear weights ship in the wheel; the backbone needs
  torchvision's ImageNet file (``vgg16-397923af.pth`` / ``alexnet-owt-7be5be79.pth``) from the
  torch hub cache or ``weights_path``. It is never downloaded: missing -> ``FileNotFoundError``.

Both packages expect [-1, 1]; inputs here are [0, 1] and mapped by 2x - 1. The loss is the mean
over the batch. The module is frozen and stays in eval mode (LPIPS' dropout stays off).
"""
from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Literal, Sequence

import torch
from torch import Tensor, nn

from .precision import upcast
from .weights import (
    check_materialised,
    load_exactly,
    load_state_dict_file,
    resolve_torchvision_weights,
    stlpips_weights,
    torchvision_features_to_slices,
)

_TORCHVISION_ARCH = {"vgg": "vgg16", "alex": "alexnet"}


def _quiet(factory, *args, **kwargs):
    """Both packages print set-up banners; keep the training log clean."""
    with contextlib.redirect_stdout(io.StringIO()):
        return factory(*args, **kwargs)


def _stlpips_model(net: str, weights_path: str | os.PathLike | None) -> nn.Module:
    from stlpips_pytorch.stlpips import LPIPS

    file = stlpips_weights(net) if weights_path is None else Path(weights_path)
    if not file.is_file():
        raise FileNotFoundError(f"ST-LPIPS weight file {str(file)!r} does not exist")
    with torch.device("meta"):  # skip initialising VGG's classifier: every tensor is loaded
        model = _quiet(LPIPS, pretrained=False, net=net, variant="shift_tolerant", verbose=False)
    load_exactly(model, load_state_dict_file(file), str(file), assign=True)
    check_materialised(model, str(file))
    return model


def _lpips_model(net: str, weights_path: str | os.PathLike | None) -> nn.Module:
    import lpips

    backbone_file = resolve_torchvision_weights(_TORCHVISION_ARCH[net], weights_path)
    linear_file = Path(lpips.__file__).parent / "weights" / "v0.1" / f"{net}.pth"
    # pnet_rand: no torchvision download; meta: no random init; every tensor is loaded below
    with torch.device("meta"):
        model = _quiet(lpips.LPIPS, pretrained=False, net=net, pnet_rand=True, verbose=False)
    model.scaling_layer = lpips.ScalingLayer()  # constants, not in any weight file
    backbone = torchvision_features_to_slices(load_state_dict_file(backbone_file), model.net)
    load_exactly(model.net, backbone, str(backbone_file), assign=True)
    linear = load_state_dict_file(linear_file)
    lins = {k.removeprefix("lin"): v for k, v in linear.items()}
    load_exactly(model.lins, lins, str(linear_file), assign=True)
    check_materialised(model, f"{backbone_file} and {linear_file}")
    return model


class LPIPSLoss(nn.Module):
    """Mean LPIPS distance between two batches of [0, 1] images (lower is more similar).

    Args:
        net: backbone, ``"vgg"`` or ``"alex"``.
        source: ``"stlpips"`` (shipped weights, default) or ``"lpips"`` (needs ImageNet backbone).
        weights_path: for ``"lpips"`` the torchvision backbone file; for ``"stlpips"`` a
            replacement for the shipped ST-LPIPS file.

    Example:
        >>> loss = LPIPSLoss("vgg")            # ST-LPIPS(vgg), offline
        >>> loss(x_refined, x).backward()
    """

    def __init__(
        self,
        net: Literal["vgg", "alex"] = "vgg",
        source: Literal["stlpips", "lpips"] = "stlpips",
        weights_path: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        if net not in _TORCHVISION_ARCH:
            raise ValueError(f"net must be 'vgg' or 'alex', got {net!r}")
        if source == "stlpips":
            self.model = _stlpips_model(net, weights_path)
            self.metric_name = f"ST-LPIPS({net})"
        elif source == "lpips":
            self.model = _lpips_model(net, weights_path)
            self.metric_name = f"LPIPS({net})"
        else:
            raise ValueError(f"source must be 'stlpips' or 'lpips', got {source!r}")
        self.net, self.source = net, source
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPSLoss:
        """Stays in eval mode: dropout in the linear heads must remain off."""
        return super().train(False)

    def per_image(self, x: Tensor, y: Tensor) -> Tensor:
        """LPIPS distance of each image pair, shape (B,)."""
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(
                f"expected two RGB batches of equal shape (B, 3, H, W), got "
                f"{tuple(x.shape)} and {tuple(y.shape)}"
            )
        # channels-last as the shared VGG trunk runs (stlic.losses.vgg): the same kernels, so the
        # shared pass of PerceptualLosses stays bit-identical to this one
        x, y = (t.contiguous(memory_format=torch.channels_last) for t in (2 * x - 1, 2 * y - 1))
        return self.model(x, y).flatten()

    def taps(self, x: Tensor) -> tuple[Tensor, ...]:
        """The package backbone's five taps of [0, 1] images ``x``, as :meth:`per_image` computes them.

        With :meth:`distance_from_taps` this gives :meth:`per_image` with one image's pass computed
        once: ``distance_from_taps(taps(y), taps(x)) == per_image(y, x)``. Evaluation uses it to
        pass the reference image through VGG once for every reconstruction it is compared with.
        """
        x = (2 * x - 1).contiguous(memory_format=torch.channels_last)
        return tuple(self.model.net.forward(self.model.scaling_layer(x)))

    def normalise_input(self, x: Tensor) -> Tensor:
        """The backbone input of [0, 1] images: the package's scaling of ``2x - 1``."""
        return self.model.scaling_layer(2 * x - 1)

    def distance_from_taps(self, taps_x: Sequence[Tensor], taps_y: Sequence[Tensor]) -> Tensor:
        """LPIPS of each pair from the backbone's five taps (of :meth:`normalise_input` inputs).

        The package's own head, unit-normalisation and spatial mean, in its order: equal to
        :meth:`per_image` when the taps come from the same backbone. Computed in float32 with
        autocast off: a bf16 trunk's taps are cast up before the unit normalisation.
        """
        if self.source == "stlpips":
            from stlpips_pytorch.stlpips import spatial_average
            from stlpips_pytorch.utils import normalize_tensor
        else:
            from lpips import normalize_tensor, spatial_average
        total = None
        with torch.autocast(taps_x[0].device.type, enabled=False):
            for head, tap_x, tap_y in zip(self.model.lins, taps_x, taps_y):
                diff = (normalize_tensor(upcast(tap_x)) - normalize_tensor(upcast(tap_y))) ** 2
                term = spatial_average(head(diff), keepdim=True)
                total = term if total is None else total + term
        return total.flatten()

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return self.per_image(x, y).mean()
