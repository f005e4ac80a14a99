"""PrefixSums (cumsum and chunked matmul forms) against brute-force sums."""
from __future__ import annotations

import pytest
import torch

from stlic.layers.wkv_prefix import PrefixSums


def _brute(x: torch.Tensor, keep) -> torch.Tensor:
    """out[..., t] = sum of x[..., i] over the i with keep(t, i)."""
    steps = x.shape[-1]
    out = torch.zeros_like(x)
    for t in range(steps):
        for i in range(steps):
            if keep(t, i):
                out[..., t] += x[..., i]
    return out


@pytest.mark.parametrize("chunk", [None, 2, 3, 8, 64])
@pytest.mark.parametrize("steps", [1, 2, 7, 24])
def test_prefix_and_suffix(chunk, steps):
    x = torch.randn(2, 3, steps, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sums = PrefixSums(chunk)
    torch.testing.assert_close(sums.prefix(x), _brute(x, lambda t, i: i < t))
    torch.testing.assert_close(sums.suffix(x), _brute(x, lambda t, i: i > t))


@pytest.mark.parametrize("chunk", [None, 2, 4])
@pytest.mark.parametrize("steps,length", [(10, 3), (9, 3), (5, 1), (12, 12), (4, 8)])
def test_segment_sums(chunk, steps, length):
    x = torch.randn(2, steps, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    sums = PrefixSums(chunk)
    same = lambda t, i: t // length == i // length  # noqa: E731
    torch.testing.assert_close(sums.segment_prefix(x, length), _brute(x, lambda t, i: same(t, i) and i < t))
    torch.testing.assert_close(sums.segment_suffix(x, length), _brute(x, lambda t, i: same(t, i) and i > t))


def test_bad_chunk_raises():
    with pytest.raises(ValueError, match="chunk"):
        PrefixSums(1)
