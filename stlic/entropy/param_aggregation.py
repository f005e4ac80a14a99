"""Parameter aggregation of the LALIC entropy model (Feng et al., CVPR 2025, Sec. 3.3).

Per channel group, a ramp of 1x1 blocks turns ``[spatial ctx, channel ctx, hyper features]``
into the Gaussian parameters ``(scales, means)``. Each block mixes channels with a 1x1 conv and
adds an RWKV channel-mix (squared-ReLU FFN gated by a sigmoid receptance)::

    u   = W_mix x
    out = u + sigmoid(W_r LN(u)) * W_v relu(W_k LN(u))^2

Widths ramp linearly from the input to ``2 * group`` channels, the hidden ones clipped below
at ``min_channels`` (CompressAI's ``sequential_channel_ramp``, as in ELIC / LALIC).
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor


class EntropyParametersBlock(nn.Module):
    """1x1 channel mix followed by a residual RWKV channel-mix FFN."""

    def __init__(self, in_channels: int, out_channels: int, expansion: int = 2) -> None:
        super().__init__()
        hidden = expansion * out_channels
        self.mix = nn.Conv2d(in_channels, out_channels, 1)
        self.norm = nn.LayerNorm(out_channels)
        self.key = nn.Linear(out_channels, hidden, bias=False)
        self.value = nn.Linear(hidden, out_channels, bias=False)
        self.receptance = nn.Linear(out_channels, out_channels, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        mixed = self.mix(x)
        tokens = self.norm(mixed.permute(0, 2, 3, 1))
        ffn = self.value(torch.relu(self.key(tokens)).square())
        gated = torch.sigmoid(self.receptance(tokens)) * ffn
        return mixed + gated.permute(0, 3, 1, 2)


def ramp_widths(in_channels: int, out_channels: int, num_layers: int, min_channels: int) -> list[int]:
    """``num_layers + 1`` widths linearly from in to out (floored), hidden ones >= min_channels."""
    if num_layers < 1:
        raise ValueError(f"parameter aggregation needs at least one layer, got {num_layers}")
    widths = torch.linspace(in_channels, out_channels, num_layers + 1).floor().int().tolist()
    return [widths[0], *(max(w, min_channels) for w in widths[1:-1]), widths[-1]]


class ParameterAggregation(nn.Sequential):
    """Ramp of EntropyParametersBlock, ``(B, in, h, w) -> (B, 2 * group, h, w)`` = (scales, means).

    Module indices follow CompressAI's ramp (a block at every even index, an identity
    "activation" between blocks), so official LALIC keys ``entropy_parameters.<2i>.*`` match.
    """

    def __init__(
        self, in_channels: int, group_channels: int, *, num_layers: int = 3,
        min_channels: int = 256, expansion: int = 2,
    ) -> None:
        widths = ramp_widths(in_channels, 2 * group_channels, num_layers, min_channels)
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            layers += [EntropyParametersBlock(c_in, c_out, expansion), nn.Identity()]
        super().__init__(*layers[:-1])
