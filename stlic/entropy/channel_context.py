"""RWKV space-channel context entropy model of LALIC (Feng et al., CVPR 2025, Sec. 3.3), after
ELIC's SCCTX (He et al., CVPR 2022), with QVRF gains (Tong et al., ICIP 2023).

y (M channels) is split into unevenly sized groups (paper: [16, 16, 32, 64, 192]). Group k is
coded after groups 0..k-1, in two checkerboard passes (anchors, then non-anchors)::

    ch_k       = conv1x1 . BiRWKV^2 . conv3x3 (y_hat_0..k-1)          channel context (k > 0)
    sp_k       = 0 (anchor pass)  |  MaskedConv5x5(y_hat_k anchors)     spatial context
    sigma, mu  = ParamAgg_k([sp_k, ch_k, h_s(z_hat)])                   Gaussian parameters
    s          = round((y_k - mu) a),  y_hat_k = s / a + mu             QVRF quantiser, gain a
    p(y_hat_k) = N(0, (sigma a)^2) * U(-1/2, 1/2) at (y_k - mu) a       rate

``run`` is the one walk over groups and passes that training, ``reconstruct``, the encoder and
the decoder share; a latent coder (``stlic.entropy.latent_coders``) decides how each pass's
``y_hat`` is obtained. Module names follow LALIC's official checkpoint layout.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn as nn
from compressai.entropy_models import GaussianConditional
from torch import Tensor

from stlic.entropy.buffers import resize_cdf_buffers
from stlic.entropy.latent_coders import (
    LatentCoder,
    RansLatentDecoder,
    RansLatentEncoder,
    RoundingQuantizer,
    SteQuantizer,
)
from stlic.entropy.param_aggregation import ParameterAggregation
from stlic.entropy.qvrf import QuantGain
from stlic.layers.checkerboard import ANCHOR, PASSES, CheckerboardMaskedConv2d, checkerboard_mask
from stlic.layers.rwkv import BiRWKVBlock

#: CompressAI's default Gaussian scale table: 64 log-spaced scales in [0.11, 256]
SCALE_TABLE = torch.exp(torch.linspace(torch.log(torch.tensor(0.11)), torch.log(torch.tensor(256.0)), 64))


class GaussianParams(NamedTuple):
    """Result of one walk: the latent estimate and the Gaussian parameters of every position."""

    y_hat: Tensor
    scales: Tensor
    means: Tensor


class LatentEstimate(NamedTuple):
    y_hat: Tensor
    likelihoods: Tensor


def channel_context_net(in_channels: int, width: int, group: int, blocks: int, hidden_rate: int) -> nn.Sequential:
    """conv3x3 -> Bi-RWKV blocks -> conv1x1: context of group k from the groups before it."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1),
        *(BiRWKVBlock(width, hidden_rate=hidden_rate) for _ in range(blocks)),
        nn.Conv2d(width, 2 * group, 1),
    )


class SCCTXEntropyModel(nn.Module):
    """Channel-group + checkerboard conditional Gaussian model of y with QVRF gains."""

    def __init__(
        self,
        groups: Sequence[int],
        hyper_channels: int,
        rate_lambdas: Sequence[float],
        *,
        context_blocks: int = 2,
        context_hidden_rate: int = 8,
        aggregation_layers: int = 3,
        aggregation_min_channels: int = 256,
        aggregation_expansion: int = 2,
    ) -> None:
        super().__init__()
        self.groups = tuple(int(g) for g in groups)
        latent_channels = sum(self.groups)
        self.channel_context = nn.ModuleDict({
            f"y{k}": channel_context_net(
                sum(self.groups[:k]), latent_channels, g, context_blocks, context_hidden_rate
            )
            for k, g in enumerate(self.groups) if k > 0
        })
        self.spatial_context = nn.ModuleList(CheckerboardMaskedConv2d(g, 2 * g, 5) for g in self.groups)
        self.param_aggregation = nn.ModuleList(
            ParameterAggregation(
                2 * g + (2 * g if k > 0 else 0) + hyper_channels, g, num_layers=aggregation_layers,
                min_channels=aggregation_min_channels, expansion=aggregation_expansion,
            )
            for k, g in enumerate(self.groups)
        )
        self.gaussian_conditional = GaussianConditional(None)
        self.gain = QuantGain(rate_lambdas)

    # -- the single walk ---------------------------------------------------------------------
    def run(self, hyper: Tensor, coder: LatentCoder) -> GaussianParams:
        """Walk groups and checkerboard passes; ``coder`` returns each pass's ``y_hat``."""
        batch, _, height, width = hyper.shape
        masks = [checkerboard_mask(height, width, step, hyper.device) for step in PASSES]
        positions = [mask.reshape(-1).nonzero().squeeze(1) for mask in masks]
        y_hats: list[Tensor] = []
        scales_all: list[Tensor] = []
        means_all: list[Tensor] = []
        for k, size in enumerate(self.groups):
            side = [hyper]
            if k > 0:
                side.insert(0, self.channel_context[f"y{k}"](torch.cat(y_hats, dim=1)))
            y_hat_k = hyper.new_zeros(batch, size, height, width)
            scales_k = torch.zeros_like(y_hat_k)
            means_k = torch.zeros_like(y_hat_k)
            for step, mask, where in zip(PASSES, masks, positions):
                if step == ANCHOR:  # anchors see no spatial context
                    spatial = hyper.new_zeros(batch, 2 * size, height, width)
                else:  # non-anchors see the anchors of this group decoded so far
                    spatial = self.spatial_context[k](y_hat_k)
                scales, means = self._pass_parameters(k, torch.cat([spatial, *side], dim=1), where)
                y_hat_k = y_hat_k + coder(k, mask, scales, means)
                scales_k = torch.where(mask, scales, scales_k)
                means_k = torch.where(mask, means, means_k)
            y_hats.append(y_hat_k)
            scales_all.append(scales_k)
            means_all.append(means_k)
        return GaussianParams(torch.cat(y_hats, 1), torch.cat(scales_all, 1), torch.cat(means_all, 1))

    def _pass_parameters(self, group: int, inputs: Tensor, where: Tensor) -> tuple[Tensor, Tensor]:
        """(scales, means) of one pass, zero off its positions ``where`` (flat indexes).

        Parameter aggregation is pointwise (1x1 convs, channel LayerNorm), so it runs on the
        pass's half of the positions only, gathered as a (B, C, n, 1) map: half the work.
        """
        batch, _, height, width = inputs.shape
        gathered = inputs.flatten(2).index_select(2, where).unsqueeze(-1)
        params = self.param_aggregation[group](gathered).squeeze(-1)
        full = params.new_zeros(batch, params.shape[1], height * width).index_copy(2, where, params)
        return full.view(batch, -1, height, width).chunk(2, dim=1)

    def _split(self, y: Tensor, hyper: Tensor) -> tuple[Tensor, ...]:
        if y.shape[1] != sum(self.groups) or y.shape[0] != hyper.shape[0] or y.shape[2:] != hyper.shape[2:]:
            raise ValueError(
                f"latent {tuple(y.shape)} does not match the groups {self.groups} / hyper features {tuple(hyper.shape)}"
            )
        return tuple(y.split(self.groups, dim=1))

    # -- training / evaluation ---------------------------------------------------------------
    def forward(self, y: Tensor, hyper: Tensor, level: float = 0.0) -> LatentEstimate:
        """``y_hat`` (STE in training, rounding in eval) and the likelihoods of y.

        Likelihoods are those of the gained residual ``(y - mu) a`` under ``N(0, (sigma a)^2)``,
        with additive uniform noise in training and rounding in eval (CompressAI's convention).
        """
        gain = self.gain(level)
        groups = self._split(y, hyper)
        quantizer = SteQuantizer(groups, gain) if self.training else RoundingQuantizer(groups, gain)
        y_hat, scales, means = self.run(hyper, quantizer)
        _, likelihoods = self.gaussian_conditional((y - means) * gain, scales * gain)
        return LatentEstimate(y_hat, likelihoods)

    # -- deterministic inference and coding (one image at a time) ----------------------------
    def quantize(self, y: Tensor, hyper: Tensor, level: float) -> Tensor:
        """Deterministic ``y_hat``, equal bit for bit to ``decompress(compress(y))``."""
        return self.run(hyper, RoundingQuantizer(self._split(y, hyper), self.gain(level))).y_hat

    def compress(self, y: Tensor, hyper: Tensor, level: float, seed: int = 0) -> tuple[bytes, Tensor]:
        """rANS string of one latent (batch 1) and its ``y_hat``; ``seed`` starts the symbol checksum."""
        if y.shape[0] != 1:
            raise ValueError(f"SCCTXEntropyModel.compress codes one image at a time, got batch {y.shape[0]}")
        encoder = RansLatentEncoder(self._split(y, hyper), self.gain(level), self.gaussian_conditional, seed)
        y_hat = self.run(hyper, encoder).y_hat
        return encoder.finish(), y_hat

    def decompress(self, string: bytes, hyper: Tensor, level: float, seed: int = 0) -> Tensor:
        """``y_hat`` of one latent (batch 1) from its string and hyper features.

        Raises ``LatentStringError`` for a malformed string (before decoding) and
        ``SymbolChecksumError`` when the decoded symbols or their CDF indexes differ from the
        encoder's (other numerics or a corrupt file).
        """
        if hyper.shape[0] != 1:
            raise ValueError(f"SCCTXEntropyModel.decompress decodes one image at a time, got batch {hyper.shape[0]}")
        n_symbols = sum(self.groups) * hyper.shape[-2] * hyper.shape[-1]
        decoder = RansLatentDecoder(string, n_symbols, self.gain(level), self.gaussian_conditional, seed)
        y_hat = self.run(hyper, decoder).y_hat
        decoder.finish()
        return y_hat

    def update(self, scale_table: Tensor | None = None, force: bool = False) -> bool:
        """Build the Gaussian CDF tables (CompressAI's ``update_scale_table``); default table
        ``SCALE_TABLE``. Returns True when the tables were (re)built."""
        table = SCALE_TABLE if scale_table is None else torch.as_tensor(scale_table, dtype=torch.float32)
        if table.dim() != 1 or len(table) < 2 or not bool((table[1:] > table[:-1]).all()) or table[0] <= 0:
            raise ValueError("scale_table must be a 1-d, strictly increasing table of positive scales")
        return self.gaussian_conditional.update_scale_table(table, force=force)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        resize_cdf_buffers(self.gaussian_conditional, prefix + "gaussian_conditional.", state_dict)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
