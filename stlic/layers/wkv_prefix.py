"""Exclusive prefix and suffix sums along the last axis, over the whole axis or restarting at
every segment of L tokens: by ``torch.cumsum`` or in chunked matmul form.

Chunked matmul form (for GPUs): the axis is cut into chunks of ``chunk`` tokens; inside a
chunk, the sums are one batched matmul with the strictly upper (prefix) or lower (suffix)
triangular matrix of ones, and each chunk adds the exclusive cumsum of the chunk totals
before (or after) it, a scan over T / chunk values. The matmuls must run in full float32
(``torch.backends.cuda.matmul.allow_tf32 = False``, PyTorch's default): TF32 would round the
summands to 10 bits.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["PrefixSums"]


def _blocks(x: Tensor, length: int) -> Tensor:
    """(..., T) -> (..., ceil(T / length), length), zero-padded at the end."""
    steps = x.shape[-1]
    n = -(-steps // length)
    return F.pad(x, (0, n * length - steps)).unflatten(-1, (n, length))


class PrefixSums:
    """Exclusive sums along the last axis; ``chunk`` None: cumsum, else chunked matmuls."""

    def __init__(self, chunk: int | None = None) -> None:
        if chunk is not None and chunk < 2:
            raise ValueError(f"chunk must be >= 2, got {chunk}")
        self.chunk = chunk

    def _cumsum(self, x: Tensor, reverse: bool) -> Tensor:
        """sum_{i<t} x_i (or sum_{i>t} x_i when ``reverse``) along the last axis."""
        if self.chunk is None or x.shape[-1] <= 2:
            if reverse:
                return self._cumsum(x.flip(-1), False).flip(-1)
            out = torch.empty_like(x)
            out[..., :1] = 0
            torch.cumsum(x[..., :-1], -1, out=out[..., 1:])
            return out
        steps = x.shape[-1]
        length = min(self.chunk, steps)
        blocks = _blocks(x, length)  # (..., n, L)
        ones = torch.ones(length, length, dtype=x.dtype, device=x.device)
        triangle = ones.triu(1) if not reverse else ones.tril(-1)  # (i, t): i < t, or i > t
        inner = blocks @ triangle
        if blocks.shape[-2] > 1:
            carry = PrefixSums(None)._cumsum(blocks.sum(-1), reverse)  # (..., n)
            inner = inner + carry[..., None]
        return inner.flatten(-2)[..., :steps]

    def prefix(self, x: Tensor) -> Tensor:
        """S_t = sum_{i<t} x_i."""
        return self._cumsum(x, False)

    def suffix(self, x: Tensor) -> Tensor:
        """S_t = sum_{i>t} x_i."""
        return self._cumsum(x, True)

    def segment_prefix(self, x: Tensor, length: int) -> Tensor:
        """sum over s_t <= i < t, s_t the start of t's segment (segments of ``length`` from 0)."""
        return self._cumsum(_blocks(x, length), False).flatten(-2)[..., :x.shape[-1]]

    def segment_suffix(self, x: Tensor, length: int) -> Tensor:
        """sum over t < i < s_t + length (inside t's segment)."""
        return self._cumsum(_blocks(x, length), True).flatten(-2)[..., :x.shape[-1]]
