"""Frozen VGG-16 feature extractor (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3).

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
ICLR 2015; the five taps are the ones LPIPS (Zhang et al., CVPR 2018) and Wasserstein distortion
(Qiu et al., 2024) read. Inputs are RGB in [0, 1]; ImageNet normalisation
``(x - mean) / std`` is applied inside.

Two backbones, named by :attr:`VGG16FeatureExtractor.backbone_name`:

* ``"vgg16-imagenet"``: torchvision's ``vgg16`` architecture with its ImageNet weights
  (``vgg16-397923af.pth``: an explicit path, else the torch hub cache).
* ``"stlpips-vgg16-antialiased"``: the VGG-16 trunk of ST-LPIPS (Ghildyal & Liu, "Shift-tolerant
  Perceptual Similarity Metric", ECCV 2022), shipped in the ``stlpips-pytorch`` wheel. It is *not*
  a plain VGG-16: every 2x2/2 max-pool is replaced by a 2x2/1 max-pool followed by a reflect-padded
  [1,2,1]x[1,2,1]/16 stride-2 blur (BlurPool), so the file's layout differs (34 layers, ``filt``
  buffers) and its convolutions are the ones ST-LPIPS runs with that pooling. Loading them into
  plain VGG-16 would compute something neither network computes, so this trunk is used as is, and
  only as the offline fallback. Numbers computed on it are not comparable to ImageNet-VGG ones.
  (ST-LPIPS' input scaling of [-1, 1] images equals the ImageNet normalisation of [0, 1] ones.)

``backbone="auto"`` takes the ImageNet file when it is found, else the ST-LPIPS trunk; asking for
``"vgg16"`` explicitly raises ``FileNotFoundError`` (naming the file and its place) when absent.
Parameters are frozen and the module stays in eval mode; gradients flow to the input.
"""
from __future__ import annotations

import os
from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from .weights import (
    load_exactly,
    load_state_dict_file,
    resolve_torchvision_weights,
    stlpips_weights,
)

BackboneChoice = Literal["auto", "vgg16", "stlpips-vgg16"]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: index of each tap's ReLU in the layer sequence
_VGG16_TAPS = (3, 8, 15, 22, 29)
_STLPIPS_TAPS = (3, 9, 17, 25, 33)


class VGGFeatures(NamedTuple):
    """The five VGG-16 feature maps, shallow to deep (strides 1, 2, 4, 8, 16)."""

    relu1_2: Tensor
    relu2_2: Tensor
    relu3_3: Tensor
    relu4_3: Tensor
    relu5_3: Tensor


def _imagenet_vgg16(path: str | os.PathLike | None, average_pooling: bool) -> nn.Sequential:
    from torchvision.models.vgg import cfgs, make_layers

    file = resolve_torchvision_weights("vgg16", path)
    layers = make_layers(cfgs["D"], batch_norm=False)[: _VGG16_TAPS[-1] + 1]
    state = {
        key.removeprefix("features."): value
        for key, value in load_state_dict_file(file).items()
        if key.startswith("features.") and int(key.split(".")[1]) <= _VGG16_TAPS[-1]
    }
    load_exactly(layers, state, str(file))
    if average_pooling:
        for index, layer in enumerate(layers):
            if isinstance(layer, nn.MaxPool2d):
                layers[index] = nn.AvgPool2d(kernel_size=2, stride=2)
    return layers


def _stlpips_vgg16(path: str | os.PathLike | None) -> nn.Sequential:
    from stlpips_pytorch.models_lpf.vgg import cfg, make_layers

    file = stlpips_weights("vgg") if path is None else path
    layers = make_layers(cfg["D"], filter_size=3, pad_more=True)[: _STLPIPS_TAPS[-1] + 1]
    state = {
        key.split(".", 2)[2]: value  # "net.slice2.5.filt" -> "5.filt"
        for key, value in load_state_dict_file(file).items()
        if key.startswith("net.")
    }
    load_exactly(layers, state, str(file))
    return layers


class VGG16FeatureExtractor(nn.Module):
    """Frozen VGG-16 returning :class:`VGGFeatures` for images in [0, 1].

    Args:
        weights_path: explicit weight file (torchvision ``vgg16`` file for ``"vgg16"``, the
            ST-LPIPS ``vgg_shift_tolerant.pth`` for ``"stlpips-vgg16"``).
        backbone: ``"auto"`` (ImageNet VGG-16 if its file is found, else the ST-LPIPS trunk),
            ``"vgg16"`` or ``"stlpips-vgg16"``.
        average_pooling: replace max-pooling by 2x2 average pooling in the ImageNet VGG-16, as
            the Wasserstein-distortion authors' code does (the ST-LPIPS trunk already blurs
            before subsampling and is left as trained).
    """

    def __init__(
        self,
        weights_path: str | os.PathLike | None = None,
        backbone: BackboneChoice = "auto",
        average_pooling: bool = False,
    ) -> None:
        super().__init__()
        if backbone not in ("auto", "vgg16", "stlpips-vgg16"):
            raise ValueError(f"backbone must be 'auto', 'vgg16' or 'stlpips-vgg16', got {backbone!r}")
        if backbone == "auto":
            try:
                resolve_torchvision_weights("vgg16", weights_path)
                backbone = "vgg16"
            except FileNotFoundError:
                if weights_path is not None:
                    raise
                backbone = "stlpips-vgg16"
        if backbone == "vgg16":
            self.layers = _imagenet_vgg16(weights_path, average_pooling)
            self.taps = _VGG16_TAPS
            self.backbone_name = "vgg16-imagenet" + ("-avgpool" if average_pooling else "")
            self.min_input_size = 16  # four 2x2/2 poolings leave relu5_3 at least 1x1
        else:
            self.layers = _stlpips_vgg16(weights_path)
            self.taps = _STLPIPS_TAPS
            self.backbone_name = "stlpips-vgg16-antialiased"
            self.min_input_size = 18  # the last blur's reflect padding needs a 3x3 input
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGG16FeatureExtractor:
        """Stays in eval mode: the backbone is a fixed measuring instrument."""
        return super().train(False)

    def forward(self, x: Tensor, depth: int = 5) -> VGGFeatures | tuple[Tensor, ...]:
        """The taps of [0, 1] images ``x``; ``depth`` < 5 stops after the first ``depth`` taps."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected RGB images of shape (B, 3, H, W), got {tuple(x.shape)}")
        if min(x.shape[-2:]) < self.min_input_size:
            raise ValueError(
                f"{self.backbone_name} needs images of at least {self.min_input_size}x"
                f"{self.min_input_size} pixels, got {tuple(x.shape[-2:])}"
            )
        return self.taps_of_normalised((x - self.mean) / self.std, depth)

    def taps_of_normalised(self, h: Tensor, depth: int = 5) -> VGGFeatures | tuple[Tensor, ...]:
        """The taps of an input already normalised to ``(x - mean) / std`` (no checks).

        For callers that normalise with an equal affine map of their own, e.g. ST-LPIPS'
        ``(2x - 1 - shift) / scale`` (shift = 1 - 2 mean, scale = 2 std).

        The trunk runs in channels-last memory format: oneDNN's NHWC convolutions and pooling
        need no reordering, 1.6x faster forward + backward than NCHW in float32 on the CPU
        (the stride-1 max-pools 6x) and 2.9x under bf16 autocast (``benchmarks/phase2_step.py``).
        The taps are channels-last tensors (same values and shapes). Under an ambient autocast
        the convolutions run in its dtype and the taps come out in it.
        """
        if not 1 <= depth <= len(self.taps):
            raise ValueError(f"depth must be in [1, {len(self.taps)}], got {depth}")
        h = h.contiguous(memory_format=torch.channels_last)
        taps = []
        for index, layer in enumerate(self.layers[: self.taps[depth - 1] + 1]):
            h = layer(h)
            if index in self.taps:
                taps.append(h)
        return VGGFeatures(*taps) if len(taps) == len(self.taps) else tuple(taps)
