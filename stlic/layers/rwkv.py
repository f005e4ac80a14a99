"""Bi-RWKV block of LALIC (Feng et al., CVPR 2025), built on Vision-RWKV (Duan et al., ICLR 2025).

    x <- x + g1 * SpatialMix(LN(x))
    x <- x + g2 * ChannelMix(LN(x))

with per-channel residual gains g1, g2 (init 1) and LayerNorm over channels. Maps are
(B, C, H, W); tokens are taken in raster order (t = h * W + w), T = H * W.

    SpatialMix(x) = W_o( sigmoid(r) * BiWKV(decay / T, boost / T, k, v) ),
                    k, v, r = W_k s, W_v s, W_r s,  s = OmniShift(x)
    (BiWKV in the paper's form, or the official kernel's for official weights: ``set_wkv_mode``)
    ChannelMix(x) = W_v( relu(W_k s)^2 ) * sigmoid(W_r s),  s = OmniShift(x), hidden = rate * C
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from stlic.layers.omnishift import OmniShift
from stlic.layers.wkv import METHODS, MODES, bi_wkv, bi_wkv_channels_first

__all__ = ["SpatialMix", "ChannelMix", "BiRWKVBlock", "map_to_tokens", "tokens_to_map", "set_wkv_mode"]


def map_to_tokens(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H*W, C), raster order."""
    return x.flatten(2).transpose(1, 2)


def tokens_to_map(tokens: Tensor, height: int, width: int) -> Tensor:
    """(B, H*W, C) in raster order -> (B, C, H, W)."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], height, width)


def _check_map(x: Tensor, dim: int, owner: str) -> None:
    if x.dim() != 4 or x.shape[1] != dim:
        raise ValueError(f"{owner}(dim={dim}) expects a (B, {dim}, H, W) map, "
                         f"got shape {tuple(x.shape)}")


class _ShiftedTokenMixer(nn.Module):
    """Shared frame: OmniShift on the map, ``mix_tokens`` on raster-order tokens, back to a map."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.shift = OmniShift(dim)

    def mix_tokens(self, tokens: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        _check_map(x, self.dim, type(self).__name__)
        height, width = x.shape[-2:]
        return tokens_to_map(self.mix_tokens(map_to_tokens(self.shift(x))), height, width)


class SpatialMix(_ShiftedTokenMixer):
    """Token mixing: OmniShift, then receptance-gated Bi-WKV linear attention.

    ``decay`` and ``boost`` are initialised from N(0, 1) as in the official LALIC code; the
    attention uses w = decay / T and u = boost / T (Vision-RWKV's resolution scaling).
    ``wkv_mode`` is ``"paper"`` (our training) or ``"kernel"`` (the official CUDA kernel's
    function, for official weights); see ``stlic.layers.wkv`` and ``set_wkv_mode``.
    ``wkv_method`` picks the algorithm (``stlic.layers.wkv.METHODS``; same result).
    """

    def __init__(self, dim: int, wkv_mode: str = "paper", wkv_method: str = "auto") -> None:
        super().__init__(dim)
        if wkv_mode not in MODES:
            raise ValueError(f"wkv_mode must be one of {MODES}, got {wkv_mode!r}")
        if wkv_method not in METHODS:
            raise ValueError(f"wkv_method must be one of {METHODS}, got {wkv_method!r}")
        self.wkv_mode, self.wkv_method = wkv_mode, wkv_method
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        self.receptance = nn.Linear(dim, dim, bias=False)
        self.output = nn.Linear(dim, dim, bias=False)
        self.decay = nn.Parameter(torch.randn(dim))
        self.boost = nn.Parameter(torch.randn(dim))

    def mix_tokens(self, tokens: Tensor) -> Tensor:
        steps = tokens.shape[1]
        if torch.is_grad_enabled():
            k, v, r = self.key(tokens), self.value(tokens), self.receptance(tokens)
            wkv = bi_wkv(self.decay / steps, self.boost / steps, k, v, mode=self.wkv_mode, method=self.wkv_method)
            return self.output(torch.sigmoid(r) * wkv)
        # inference: the projections write k, v, r channels-first (B, C, T), the layout of the
        # Bi-WKV algorithms, and the output projection reads it back: no transposed copies
        batch = tokens.shape[0]
        channels_first = tokens.transpose(1, 2)
        k, v, r = (torch.bmm(layer.weight.expand(batch, -1, -1), channels_first)
                   for layer in (self.key, self.value, self.receptance))
        wkv = bi_wkv_channels_first(self.decay / steps, self.boost / steps, k, v, mode=self.wkv_mode,
                                    method=self.wkv_method)
        return torch.bmm((torch.sigmoid(r) * wkv).transpose(1, 2), self.output.weight.t().expand(batch, -1, -1))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, wkv_mode={self.wkv_mode!r}, wkv_method={self.wkv_method!r}"


def set_wkv_mode(module: nn.Module, mode: str | None = None, method: str | None = None) -> int:
    """Set the Bi-WKV mode and/or method of every ``SpatialMix`` inside ``module``; returns how many.

    The mode is a property of the weights (which function they were trained with), not a
    parameter: it is not stored in the state_dict.
    """
    if mode is not None and mode not in MODES:
        raise ValueError(f"wkv_mode must be one of {MODES}, got {mode!r}")
    if method is not None and method not in METHODS:
        raise ValueError(f"wkv_method must be one of {METHODS}, got {method!r}")
    mixers = [m for m in module.modules() if isinstance(m, SpatialMix)]
    for mixer in mixers:
        mixer.wkv_mode = mode or mixer.wkv_mode
        mixer.wkv_method = method or mixer.wkv_method
    return len(mixers)


class ChannelMix(_ShiftedTokenMixer):
    """Channel mixing: OmniShift, then a squared-ReLU MLP gated by sigmoid(receptance)."""

    def __init__(self, dim: int, hidden_rate: int = 4) -> None:
        if hidden_rate < 1:
            raise ValueError(f"hidden_rate must be >= 1, got {hidden_rate}")
        super().__init__(dim)
        self.key = nn.Linear(dim, hidden_rate * dim, bias=False)
        self.value = nn.Linear(hidden_rate * dim, dim, bias=False)
        self.receptance = nn.Linear(dim, dim, bias=False)

    def mix_tokens(self, tokens: Tensor) -> Tensor:
        hidden = self.key(tokens)
        if hidden.requires_grad:
            hidden = torch.relu(hidden).square()
        else:  # inference: in place, no new (T, rate * C) buffers
            hidden = torch.relu_(hidden).mul_(hidden)
        return self.value(hidden) * torch.sigmoid(self.receptance(tokens))


class BiRWKVBlock(nn.Module):
    """Pre-norm residual Bi-RWKV block on (B, C, H, W) maps; output shape equals input shape."""

    def __init__(self, dim: int, hidden_rate: int = 4) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"BiRWKVBlock needs dim >= 1, got {dim}")
        self.dim = dim
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.spatial_mix = SpatialMix(dim)
        self.channel_mix = ChannelMix(dim, hidden_rate)
        self.gamma1 = nn.Parameter(torch.ones(dim))
        self.gamma2 = nn.Parameter(torch.ones(dim))

    @staticmethod
    def _channel_norm(norm: nn.LayerNorm, x: Tensor) -> Tensor:
        return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward(self, x: Tensor) -> Tensor:
        _check_map(x, self.dim, type(self).__name__)
        if not torch.is_grad_enabled():  # inference: (B, H, W, C) memory, so the channel LayerNorms,
            x = x.contiguous(memory_format=torch.channels_last)  # tokens and maps are views, not copies
        gain1 = self.gamma1[:, None, None]
        gain2 = self.gamma2[:, None, None]
        x = x + gain1 * self.spatial_mix(self._channel_norm(self.norm1, x))
        return x + gain2 * self.channel_mix(self._channel_norm(self.norm2, x))
