"""What happens to the latent at each (channel group, checkerboard pass) of the SCCTX model.

``SCCTXEntropyModel.run`` walks the groups and passes and, at each one, hands the predicted
``(scales, means)`` to a *latent coder* that returns ``y_hat`` on that pass's positions (zero
elsewhere). The same walk serves training, inference, encoding and decoding; only the coder
changes, so the decoder repeats the encoder's arithmetic operation for operation:

* ``SteQuantizer``     training: ``y_hat = STE(round((y - mu) a)) / a + mu`` (straight-through).
* ``RoundingQuantizer`` inference without coding (``reconstruct``).
* ``RansLatentEncoder`` rounding + rANS coding of the symbols ``s = round((y - mu) a)``.
* ``RansLatentDecoder`` decodes ``s`` and dequantises with the same ``dequantize``.

Coding: the symbols of y in one sequence (groups in order, anchors before non-anchors, each
pass in (channel, row, column) order), cut into bounded rANS chunks with a checksum of CDF
indexes and symbols (``stlic.entropy.rans_stream``). A symbol's CDF is the
``GaussianConditional`` table entry *nearest* (in log scale) to its gained scale ``sigma * a``:
CompressAI's ``build_indexes`` rounds every scale up to the next table entry, which with the
default 64-entry table costs ~3% more bits than the likelihoods promise; nearest rounding is
unbiased (measured: within 0.1% before the ~16 bytes of string overhead). Departure from
CompressAI: the nearest-scale indexes, the chunked layout and the checksum make these strings
unreadable by CompressAI's ``GaussianConditional.decompress`` (and vice versa).
"""
from __future__ import annotations

from typing import Protocol

import torch
from compressai.entropy_models import GaussianConditional
from compressai.ops import quantize_ste
from torch import Tensor

from stlic.entropy.rans_stream import CdfTables, ChunkedRansDecoder, ChunkedRansEncoder


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


def nearest_scale_boundaries(gaussian: GaussianConditional) -> Tensor:
    """Geometric midpoints between consecutive table scales (float64): nearest-entry boundaries."""
    table = gaussian.scale_table.to(torch.float64)
    return (table[:-1] * table[1:]).sqrt()


class _CodingTables:
    """CDF tables, and the CDF index of each masked position: nearest table scale to ``sigma a``."""

    def __init__(self, gaussian: GaussianConditional, gain: Tensor) -> None:
        self.gain = gain
        self.cdf = CdfTables(gaussian.quantized_cdf, gaussian.cdf_length, gaussian.offset)
        self.boundaries = nearest_scale_boundaries(gaussian).to(gain.device)

    def indexes(self, mask: Tensor, scales: Tensor) -> Tensor:
        indexes = torch.bucketize((scales * self.gain).to(torch.float64), self.boundaries).to(torch.int32)
        return torch.masked_select(indexes, mask).cpu()


class RansLatentEncoder(RoundingQuantizer):
    """Rounds like ``RoundingQuantizer`` and codes the symbols pass by pass (``ChunkedRansEncoder``)."""

    def __init__(
        self, y_groups: tuple[Tensor, ...], gain: Tensor, gaussian: GaussianConditional, seed: int = 0
    ) -> None:
        super().__init__(y_groups, gain)
        self.tables = _CodingTables(gaussian, gain)
        self.encoder = ChunkedRansEncoder(self.tables.cdf, seed)

    def record(self, symbols: Tensor, mask: Tensor, scales: Tensor) -> None:
        values = torch.masked_select(symbols, mask).to(torch.int32).cpu()
        self.encoder.encode(self.tables.indexes(mask, scales), values)

    def finish(self) -> bytes:
        return self.encoder.finish()


class RansLatentDecoder:
    """Decodes the symbols of each pass from the string and dequantises them."""

    def __init__(
        self, string: bytes, n_symbols: int, gain: Tensor, gaussian: GaussianConditional, seed: int = 0
    ) -> None:
        self.gain = gain
        self.tables = _CodingTables(gaussian, gain)
        self.decoder = ChunkedRansDecoder(string, n_symbols, self.tables.cdf, seed=seed)

    def __call__(self, group: int, mask: Tensor, scales: Tensor, means: Tensor) -> Tensor:
        mask = mask.expand_as(scales)
        decoded = self.decoder.decode(self.tables.indexes(mask, scales))
        symbols = torch.zeros_like(scales).masked_scatter(mask, decoded.to(scales.device, scales.dtype))
        return torch.where(mask, dequantize(symbols, means, self.gain), 0.0)

    def finish(self) -> None:
        """Check the symbol checksum (SymbolChecksumError on a mismatch)."""
        self.decoder.verify()
