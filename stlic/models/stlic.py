"""ST-LIC model ("Stable Training for Perception-Oriented Learned Image Compression"):
the LALIC main network followed by a UNet refiner.

    x_hat     = LALIC(x, level)         distortion losses (L1, L2) go here
    x_refined = UNetRefiner(x_hat)      perceptual losses (LPIPS, Wasserstein, GAN) go here

CompressAI protocol: ``forward``, ``aux_loss``, ``update(scale_table, force)``, ``compress`` /
``decompress`` (typed outputs that also read as CompressAI's dicts, so
``compressai.utils.eval_model`` runs on the model), plus ``reconstruct`` (the decoder's output
without entropy coding, bit-identical to ``decompress(compress(x))``, on any device: the
entropy parameters are computed in float64, ``stlic.models.parameter_path``). Departures: a
symbol's CDF is the *nearest* table scale (CompressAI rounds up), and the strings are chunked
rANS streams with a checksum (``stlic.entropy.rans_stream``), so they are not interchangeable
with CompressAI models' strings. ``compress`` / ``reconstruct`` take any image
size: the batch is padded on the right and bottom by edge replication to a multiple of 64 and the
outputs are cropped back. Gradient-probing groups: ``model.main`` and ``model.refiner``.

Example:
    >>> import torch
    >>> model = STLIC("tiny").eval(); _ = model.update()
    >>> x = torch.rand(1, 3, 40, 56)
    >>> c = model.compress(x, level=1.5)
    >>> d = model.decompress(c.strings, c.shape, c.level, c.original_size)
    >>> torch.equal(d.x_hat, model.reconstruct(x, level=1.5).x_hat)
    True
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from stlic.layers.unet import UNetRefiner
from stlic.models.config import ModelConfig, preset
from stlic.models.lalic import LALIC, SIZE_MULTIPLE, LatentStrings, check_image
from stlic.models.outputs import CompressedImage, DecodedImage, STLICOutput
from stlic.registry import register_model


def pad_to_multiple(x: Tensor, multiple: int = SIZE_MULTIPLE) -> Tensor:
    """Pad (B, C, H, W) on the right / bottom by edge replication up to multiples of ``multiple``."""
    if x.dim() != 4 or x.shape[1] != 3 or x.shape[-1] == 0 or x.shape[-2] == 0:
        raise ValueError(f"expected a non-empty image batch of shape (B, 3, H, W), got {tuple(x.shape)}")
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")


class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad * ctx.scale, None


def scale_gradient(x: Tensor, scale: float) -> Tensor:
    """``x`` unchanged in the forward pass; its gradient multiplied by ``scale`` in the backward pass.

    ``scale`` 1 returns ``x`` itself and 0 ``x.detach()``, so neither adds a node to the graph.
    """
    if scale == 1.0:
        return x
    if scale == 0.0:
        return x.detach()
    return _ScaleGradient.apply(x, float(scale))


@register_model("stlic")
class STLIC(nn.Module):
    """LALIC main network (``main``) + UNet refiner (``refiner``)."""

    def __init__(self, config: ModelConfig | str | None = None) -> None:
        super().__init__()
        if config is None or isinstance(config, str):
            config = preset(config or "full")
        if not isinstance(config, ModelConfig):
            raise TypeError(f"config must be a ModelConfig or a preset name, got {type(config).__name__}")
        self.config = config
        self.main = LALIC(config)
        self.refiner = UNetRefiner(config.refiner_channels, config.refiner_depth)

    @property
    def rate_lambdas(self) -> tuple[float, ...]:
        return self.config.rate_lambdas

    @property
    def n_levels(self) -> int:
        return self.config.n_levels

    def level_for_lambda(self, lmbda: float) -> float:
        """Continuous QVRF level of rate coefficient ``lmbda`` (see ModelConfig.level_for_lambda)."""
        return self.config.level_for_lambda(lmbda)

    def forward(self, x: Tensor, level: float = 0.0, refine: bool = True,
                main_grad_scale: float = 1.0) -> STLICOutput:
        """Training pass; H and W must be multiples of 64 (ValueError otherwise).

        ``refine=False`` skips the refiner (``x_refined`` is ``x_hat``): rate-distortion pretraining.
        ``main_grad_scale`` s: the refiner sees ``x_hat`` unchanged, but the gradient of every loss on
        ``x_refined`` reaches the main network multiplied by s (:func:`scale_gradient`). 1 is ST-LIC as
        published (Eq. 3: the perceptual losses train both); 0 decouples the two networks fully.
        """
        check_image(x)
        out = self.main(x, level)
        x_refined = self.refiner(scale_gradient(out.x_hat, main_grad_scale)) if refine else out.x_hat
        return STLICOutput(out.x_hat, x_refined, out.likelihoods, out.y_hat)

    def aux_loss(self) -> Tensor:
        return self.main.aux_loss()

    def update(self, scale_table: Tensor | None = None, force: bool = False) -> bool:
        """Build the CDF tables (CompressAI's ``update(scale_table=None, force=False)``)."""
        return self.main.update(scale_table, force=force)

    # -- inference -----------------------------------------------------------------------------
    def _decode(self, y_hats: Sequence[Tensor], original_size: tuple[int, int] | None,
                refine: bool = True) -> DecodedImage:
        """Shared tail of reconstruct / decompress: g_s, refiner (``refine=False``: skipped,
        ``x_refined`` is ``x_hat``), clamp, crop."""
        x_hat = torch.cat([self.main.g_s(y_hat) for y_hat in y_hats])
        x_refined = self.refiner(x_hat) if refine else None
        if original_size is not None:
            height, width = original_size
            x_hat = x_hat[..., :height, :width]
            x_refined = None if x_refined is None else x_refined[..., :height, :width]
        x_hat = x_hat.clamp(0, 1)
        return DecodedImage(x_hat, x_hat if x_refined is None else x_refined.clamp(0, 1))

    @torch.no_grad()
    def reconstruct(self, x: Tensor, level: float = 0.0, *, refine: bool = True) -> DecodedImage:
        """Deterministic inference of any-size ``x``; equals ``decompress(compress(x))`` bit for bit.
        ``refine=False`` skips the refiner (``x_refined`` is then ``x_hat``)."""
        padded = pad_to_multiple(x)
        y_hats = [self.main.quantize_latent(image[None], level) for image in padded]
        return self._decode(y_hats, (x.shape[-2], x.shape[-1]), refine)

    @torch.no_grad()
    def compress(self, x: Tensor, level: float = 0.0) -> CompressedImage:
        """Code a batch of any-size images at QVRF ``level`` (one y and one z string per image)."""
        padded = pad_to_multiple(x)
        codes = [self.main.compress_latent(image[None], level) for image in padded]
        return CompressedImage(
            strings=[[c.y_string for c in codes], [c.z_string for c in codes]],
            shape=codes[0].z_shape,
            level=float(level),
            original_size=(x.shape[-2], x.shape[-1]),
        )

    @torch.no_grad()
    def decompress(
        self, strings: Sequence[Sequence[bytes]], shape: Sequence[int], level: float = 0.0,
        original_size: Sequence[int] | None = None, *, refine: bool = True,
    ) -> DecodedImage:
        """Decode ``CompressedImage.strings`` / ``.shape`` (z's size); pass ``original_size`` to crop.

        Without ``original_size`` the output keeps the padded size ``64 * shape``. ``refine=False``
        skips the refiner when only the decoder output ``x_hat`` is wanted (``x_refined`` is ``x_hat``).
        """
        if len(strings) != 2 or len(strings[0]) != len(strings[1]):
            raise ValueError("strings must be [y_strings, z_strings] with one string per image in each")
        if len(shape) != 2:
            raise ValueError(f"shape must be z's (h, w), got {tuple(shape)}")
        z_shape = (int(shape[0]), int(shape[1]))
        y_hats = [
            self.main.decompress_latent(LatentStrings(y, z, z_shape), level)
            for y, z in zip(strings[0], strings[1])
        ]
        size = None if original_size is None else (int(original_size[0]), int(original_size[1]))
        if size is not None and not (0 < size[0] <= 64 * z_shape[0] and 0 < size[1] <= 64 * z_shape[1]):
            raise ValueError(f"original_size {size} does not fit the coded size {64 * z_shape[0]}x{64 * z_shape[1]}")
        return self._decode(y_hats, size, refine)
