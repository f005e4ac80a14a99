"""LALIC main network (Feng et al., "Linear Attention Modeling for Learned Image Compression",
CVPR 2025) with QVRF variable rate (Tong et al., ICIP 2023): the ``main`` part of ST-LIC.

::

    y = g_a(x)          z = h_a(y)          z_hat = Q(z - med) + med   (EntropyBottleneck)
    hyper = h_s(z_hat)  y_hat, p(y) = SCCTX(y, hyper, level)           x_hat = g_s(y_hat)

Training quantises with a straight-through round for both y and z (LALIC / ELIC "ste") and
estimates the rates with additive uniform noise (CompressAI's convention). The coding methods
work on one image at a time so that ``reconstruct`` and ``decompress(compress(.))`` run the
same operations on the same shapes and agree bit for bit.

``full`` preset: 65.6M parameters (g_a 7.8M, g_s 7.8M, h_a 8.5M, h_s 8.5M, entropy model 33.0M);
``stlic.models.lalic_keys`` maps the official checkpoint layout onto this module.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
from compressai.entropy_models import EntropyBottleneck
from compressai.ops import quantize_ste
from torch import Tensor

from stlic.entropy.buffers import resize_cdf_buffers
from stlic.entropy.channel_context import SCCTXEntropyModel
from stlic.entropy.rans_stream import CdfTables, ChunkedRansDecoder, ChunkedRansEncoder
from stlic.layers.transforms import AnalysisTransform, HyperAnalysis, HyperSynthesis, SynthesisTransform
from stlic.models.config import ModelConfig
from stlic.models.outputs import LALICOutput
from stlic.models.parameter_path import PARAMETER_DTYPE, parameter_path_copy

#: total down-sampling of x to z: H and W of the input must be multiples of it
SIZE_MULTIPLE = 64


class LatentStrings(NamedTuple):
    """One image's code: rANS string of y, EntropyBottleneck string of z, z's (h, w)."""

    y_string: bytes
    z_string: bytes
    z_shape: tuple[int, int]


def check_image(x: Tensor, multiple: int = SIZE_MULTIPLE) -> None:
    """Raise a ValueError unless ``x`` is a (B, 3, H, W) batch with H, W multiples of ``multiple``."""
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected an image batch of shape (B, 3, H, W), got {tuple(x.shape)}")
    height, width = x.shape[-2:]
    if height % multiple or width % multiple:
        raise ValueError(
            f"H and W must be multiples of {multiple}, got {height}x{width}; pad the image "
            "(compress / reconstruct do it for you)"
        )


class LALIC(nn.Module):
    """Bi-RWKV transforms + hyperprior + RWKV space-channel context model with QVRF gains."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        m = config.latent_channels
        rate = config.block_hidden_rate
        self.g_a = AnalysisTransform(config.transform_channels, config.transform_depths, rate)
        self.g_s = SynthesisTransform(config.transform_channels, config.transform_depths, rate)
        self.h_a = HyperAnalysis(m, config.hyper_channels, config.hyper_depth, rate)
        self.h_s = HyperSynthesis(m, config.hyper_channels, config.hyper_depth, rate)
        self.entropy_bottleneck = EntropyBottleneck(config.hyper_channels[1])
        self.entropy_model = SCCTXEntropyModel(
            config.groups, m, config.rate_lambdas,
            context_blocks=config.context_blocks, context_hidden_rate=config.context_hidden_rate,
            aggregation_layers=config.aggregation_layers,
            aggregation_min_channels=config.aggregation_min_channels,
            aggregation_expansion=config.aggregation_expansion,
        )
        #: dtype of h_s and the SCCTX model when coding (stlic.models.parameter_path)
        self.parameter_dtype = PARAMETER_DTYPE

    # -- training ------------------------------------------------------------------------------
    def forward(self, x: Tensor, level: float = 0.0) -> LALICOutput:
        check_image(x)
        y = self.g_a(x)
        z = self.h_a(y)
        with torch.autocast(x.device.type, enabled=False):  # likelihoods in float32 under bf16 / fp16 autocast
            z = z.float()
            z_hat, z_likelihoods = self.entropy_bottleneck(z)
            if self.training:
                medians = self.z_medians()
                z_hat = quantize_ste(z - medians) + medians
            y = y.float()
            y_hat, y_likelihoods = self.entropy_model(y, self.h_s(z_hat).float(), level)
        return LALICOutput(self.g_s(y_hat), {"y": y_likelihoods, "z": z_likelihoods}, y_hat)

    def aux_loss(self) -> Tensor:
        """Quantile loss of the EntropyBottleneck (train it with its own optimizer)."""
        return self.entropy_bottleneck.loss()

    def update(self, scale_table: Tensor | None = None, force: bool = False) -> bool:
        """Build the CDF tables of z and y (CompressAI's signature; ``scale_table`` defaults to
        ``SCALE_TABLE``); returns True when anything was (re)built."""
        updated = self.entropy_bottleneck.update(force=force)
        return self.entropy_model.update(scale_table, force=force) or updated

    # -- deterministic inference and coding, one (1, 3, H, W) image at a time -----------------
    def z_medians(self) -> Tensor:
        """(1, Z, 1, 1) medians of the EntropyBottleneck: z is quantised as round(z - med) + med."""
        return self.entropy_bottleneck._get_medians().detach().reshape(1, -1, 1, 1)

    def _analyse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """y and the symbols ``round(z - med)`` of z (EntropyBottleneck's quantisation)."""
        check_image(x)
        if x.shape[0] != 1:
            raise ValueError(f"the coding path takes one image at a time, got batch {x.shape[0]}")
        y = self.g_a(x)
        z_symbols = self.entropy_bottleneck.quantize(self.h_a(y), "symbols", self.z_medians())
        return y, z_symbols

    def _parameter_path(self, z_symbols: Tensor) -> tuple[SCCTXEntropyModel, Tensor]:
        """The SCCTX model and ``h_s(z_hat)`` in ``parameter_dtype`` (``stlic.models.parameter_path``)."""
        z_hat = self.entropy_bottleneck.dequantize(z_symbols, self.z_medians())
        h_s = parameter_path_copy(self.h_s, self.parameter_dtype)
        return parameter_path_copy(self.entropy_model, self.parameter_dtype), h_s(z_hat.to(self.parameter_dtype))

    def _z_tables(self) -> CdfTables:
        eb = self.entropy_bottleneck
        return CdfTables(eb.quantized_cdf, eb.cdf_length, eb.offset)

    def quantize_latent(self, x: Tensor, level: float) -> Tensor:
        """``y_hat`` of one image without entropy coding (what the decoder will see)."""
        y, z_symbols = self._analyse(x)
        entropy_model, hyper = self._parameter_path(z_symbols)
        return entropy_model.quantize(y.to(hyper.dtype), hyper, level).to(y.dtype)

    def compress_latent(self, x: Tensor, level: float) -> LatentStrings:
        """Code one image: z (one CDF per channel) and y (SCCTX model), each a chunked rANS string."""
        y, z_symbols = self._analyse(x)
        z_coder = ChunkedRansEncoder(self._z_tables())
        channels = torch.arange(z_symbols.shape[1], dtype=torch.int32).view(-1, 1, 1).expand_as(z_symbols[0])
        z_coder.encode(channels.reshape(-1), z_symbols[0].reshape(-1).to(torch.int32).cpu())
        entropy_model, hyper = self._parameter_path(z_symbols)
        y_string, _ = entropy_model.compress(y.to(hyper.dtype), hyper, level, seed=z_coder.crc)
        return LatentStrings(y_string, z_coder.finish(), (z_symbols.shape[-2], z_symbols.shape[-1]))

    def decompress_latent(self, strings: LatentStrings, level: float) -> Tensor:
        """``y_hat`` of one image from its strings (LatentStringError / SymbolChecksumError on bad ones)."""
        height, width = strings.z_shape
        channels = self.config.hyper_channels[1]
        decoder = ChunkedRansDecoder(strings.z_string, channels * height * width, self._z_tables(), name="z")
        indexes = torch.arange(channels, dtype=torch.int32).repeat_interleave(height * width)
        z_symbols = decoder.decode(indexes).view(1, channels, height, width).to(self.z_medians().device)
        decoder.verify()
        entropy_model, hyper = self._parameter_path(z_symbols)
        return entropy_model.decompress(strings.y_string, hyper, level, seed=decoder.crc).to(self.z_medians().dtype)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        resize_cdf_buffers(self.entropy_bottleneck, prefix + "entropy_bottleneck.", state_dict)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
