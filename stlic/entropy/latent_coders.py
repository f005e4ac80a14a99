"""What happens to the latent at each (channel group, checkerboard pass) of the SCCTX model.

``SCCTXEntropyModel.run`` walks the groups and passes and, at each one, hands the predicted
``(scales, means)`` to a *latent coder* that returns ``y_hat`` on that pass's positions (zero
elsewhere). The same walk serves training, inference, encoding and decoding; only the coder
changes, so the decoder repeats the encoder's arithmetic operation for operation:

* ``SteQuantizer``     training: ``y_hat = STE(round((y - mu) a)) / a + mu`` (straight-through).
* ``RoundingQuantizer`` inference without coding (``reconstruct``).
* ``RansLatentEncoder`` rounding + rANS coding of the symbols ``s = round((y - mu) a)``.
* ``RansLatentDecoder`` decodes ``s`` and dequantises with the same ``dequantize``.

Coding: one rANS stream (CompressAI's ``BufferedRansEncoder`` / ``RansDecoder``) per image for
all of y, groups in order, anchors before non-anchors, each pass in (channel, row, column)
order. A symbol's CDF is the ``GaussianConditional`` table entry *nearest* (in log scale) to
its gained scale ``sigma * a``: CompressAI's ``build_indexes`` rounds every scale up to the next
table entry, which with the default 64-entry table costs ~3% more bits than the likelihoods
promise; nearest rounding is unbiased (measured: within 0.1% before the ~8 bytes of coder
overhead).
"""
from __future__ import annotations

from typing import Protocol

import torch
from compressai.ans import BufferedRansEncoder, RansDecoder
from compressai.entropy_models import GaussianConditional
from compressai.ops import quantize_ste
from torch import Tensor


def dequantize(symbols: Tensor, means: Tensor, gain: Tensor) -> Tensor:
    """QVRF dequantisation ``y_hat = s / a + mu`` (shared by every coder, hence bit-exact)."""
    return symbols / gain + means


class LatentCoder(Protocol):
    def __call__(self, group: int, mask: Tensor, scales: Tensor, means: Tensor) -> Tensor:
        """``y_hat`` of ``group`` on the positions where ``mask`` is true, zero elsewhere."""


class SteQuantizer:
    """Training: rounding with a straight-through gradient (LALIC / ELIC "ste" quantiser)."""

    def __init__(self, y_groups: tuple[Tensor, ...], gain: Tensor) -> None:
        self.y_groups, self.gain = y_groups, gain

    def __call__(self, group: int, mask: Tensor, scales: Tensor, means: Tensor) -> Tensor:
        symbols = quantize_ste((self.y_groups[group] - means) * self.gain)
        return torch.where(mask, dequantize(symbols, means, self.gain), 0.0)


class RoundingQuantizer:
    """Inference: ``s = round((y - mu) a)``; subclasses see the symbols through ``record``."""

    def __init__(self, y_groups: tuple[Tensor, ...], gain: Tensor) -> None:
        self.y_groups, self.gain = y_groups, gain

    def __call__(self, group: int, mask: Tensor, scales: Tensor, means: Tensor) -> Tensor:
        symbols = torch.round((self.y_groups[group] - means) * self.gain)
        self.record(symbols, mask, scales)
        return torch.where(mask, dequantize(symbols, means, self.gain), 0.0)

    def record(self, symbols: Tensor, mask: Tensor, scales: Tensor) -> None:
        """Hook for the encoder; plain inference keeps nothing."""


class _CdfTables:
    """CompressAI's Gaussian CDF tables as the Python lists the rANS coder wants."""

    def __init__(self, gaussian: GaussianConditional, gain: Tensor) -> None:
        if gaussian.quantized_cdf.numel() == 0:
            raise RuntimeError("entropy model has no CDF tables yet: call model.update() before coding")
        self.gain = gain
        table = gaussian.scale_table.to(torch.float64)
        #: geometric midpoints between consecutive table scales: the nearest-entry boundaries
        self.boundaries = (table[:-1] * table[1:]).sqrt()
        self.cdfs = gaussian.quantized_cdf.tolist()
        self.lengths = gaussian.cdf_length.reshape(-1).int().tolist()
        self.offsets = gaussian.offset.reshape(-1).int().tolist()

    def indexes(self, mask: Tensor, scales: Tensor) -> list[int]:
        """CDF index of every masked position: nearest table scale to ``sigma * a``."""
        indexes = torch.bucketize((scales * self.gain).to(torch.float64), self.boundaries)
        return torch.masked_select(indexes, mask).tolist()


class RansLatentEncoder(RoundingQuantizer):
    """Rounds like ``RoundingQuantizer`` and codes the symbols pass by pass into one stream."""

    def __init__(self, y_groups: tuple[Tensor, ...], gain: Tensor, gaussian: GaussianConditional) -> None:
        super().__init__(y_groups, gain)
        self.tables = _CdfTables(gaussian, gain)
        self.encoder = BufferedRansEncoder()

    def record(self, symbols: Tensor, mask: Tensor, scales: Tensor) -> None:
        values = torch.masked_select(symbols, mask).int().tolist()
        t = self.tables
        self.encoder.encode_with_indexes(values, t.indexes(mask, scales), t.cdfs, t.lengths, t.offsets)

    def finish(self) -> bytes:
        return self.encoder.flush()


class RansLatentDecoder:
    """Decodes the symbols of each pass from the stream and dequantises them."""

    def __init__(self, string: bytes, gain: Tensor, gaussian: GaussianConditional) -> None:
        self.gain = gain
        self.tables = _CdfTables(gaussian, gain)
        self.decoder = RansDecoder()
        self.decoder.set_stream(string)

    def __call__(self, group: int, mask: Tensor, scales: Tensor, means: Tensor) -> Tensor:
        t = self.tables
        mask = mask.expand_as(scales)
        values = self.decoder.decode_stream(t.indexes(mask, scales), t.cdfs, t.lengths, t.offsets)
        decoded = torch.tensor(values, dtype=scales.dtype, device=scales.device)
        symbols = torch.zeros_like(scales).masked_scatter(mask, decoded)
        return torch.where(mask, dequantize(symbols, means, self.gain), 0.0)
