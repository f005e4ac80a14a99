"""Chunked rANS strings: round trip across chunks, layout validation, checksum, hostile bytes."""
import random

import pytest
import torch
from compressai.entropy_models import GaussianConditional

from stlic.entropy.rans_stream import (
    CHUNK_SYMBOLS,
    CdfTables,
    ChunkedRansDecoder,
    ChunkedRansEncoder,
    LatentStringError,
    SymbolChecksumError,
    decoder_padding,
    n_chunks,
    split_chunks,
)


@pytest.fixture(scope="module")
def tables():
    gaussian = GaussianConditional(None)
    gaussian.update_scale_table(torch.tensor([0.2, 1.0, 5.0, 40.0]))
    return CdfTables(gaussian.quantized_cdf, gaussian.cdf_length, gaussian.offset)


def _symbols(n, seed=0):
    generator = torch.Generator().manual_seed(seed)
    indexes = torch.randint(0, 4, (n,), generator=generator, dtype=torch.int32)
    scales = torch.tensor([0.2, 1.0, 5.0, 40.0])[indexes.long()]
    symbols = torch.round(torch.randn(n, generator=generator) * scales).to(torch.int32)
    symbols[::997] = 5000  # escaped values (bypass coding) now and then
    return indexes, symbols


def _encode(tables, indexes, symbols, pieces):
    encoder = ChunkedRansEncoder(tables)
    bounds = [round(i * len(indexes) / pieces) for i in range(pieces + 1)]
    for start, stop in zip(bounds[:-1], bounds[1:]):
        encoder.encode(indexes[start:stop], symbols[start:stop])
    return encoder.finish()


def _decode(tables, string, indexes, pieces):
    decoder = ChunkedRansDecoder(string, len(indexes), tables)
    bounds = [round(i * len(indexes) / pieces) for i in range(pieces + 1)]
    out = torch.cat([decoder.decode(indexes[a:b]) for a, b in zip(bounds[:-1], bounds[1:])])
    decoder.verify()
    return out


@pytest.mark.parametrize("n,pieces", [(1, 1), (1000, 3), (CHUNK_SYMBOLS + 12345, 7)])
def test_round_trip_across_passes_and_chunks(tables, n, pieces):
    indexes, symbols = _symbols(n)
    string = _encode(tables, indexes, symbols, pieces)
    assert len(split_chunks(string, n)) == n_chunks(n)
    assert torch.equal(_decode(tables, string, indexes, pieces + 2), symbols)


def test_layout_errors_are_named_before_decoding(tables):
    indexes, symbols = _symbols(500)
    string = _encode(tables, indexes, symbols, 1)
    cases = [
        (b"", "too short"),
        (string[:3], "too short"),
        (string[:-1], "declares"),
        (string + b"\0", "declares"),
        (bytes([7, 0, 0, 0]) + string[4:], "multiple of 4"),
        (bytes([4, 0, 0, 0]) + string[4:], "at least 8"),
    ]
    for bad, message in cases:
        with pytest.raises(LatentStringError, match=message):
            ChunkedRansDecoder(bad, 500, tables)


def test_checksum_catches_other_cdf_indexes(tables):
    """Same string, one CDF index changed at the decoder: a clear error, not silent garbage."""
    indexes, symbols = _symbols(2000)
    string = _encode(tables, indexes, symbols, 2)
    other = indexes.clone()
    other[1500] = (other[1500] + 1) % 4
    with pytest.raises(SymbolChecksumError, match="device, thread count or float precision"):
        _decode(tables, string, other, 2)
    decoder = ChunkedRansDecoder(string, 2000, tables)
    decoder.decode(indexes[:1000])
    with pytest.raises(SymbolChecksumError):  # stopping early fails too
        decoder.verify()
    with pytest.raises(LatentStringError, match="more than"):
        decoder.decode(indexes)


@pytest.mark.parametrize("filler", ["ff", "zero", "random"])
def test_forged_strings_decode_inside_their_buffers(tables, filler):
    """Valid layout, hostile content (all-ones bytes maximise the bypass runs): the decoder
    stays inside the zero padding and the checksum refuses the result."""
    rng = random.Random(0)
    for n, length in ((1, 8), (5000, 8), (5000, 4096)):
        body = {"ff": b"\xff" * length, "zero": bytes(length),
                "random": bytes(rng.getrandbits(8) for _ in range(length))}[filler]
        string = length.to_bytes(4, "little") + body + b"\0\0\0\0"
        indexes = torch.full((n,), 0, dtype=torch.int32)
        with pytest.raises(SymbolChecksumError):
            _decode(tables, string, indexes, 1)


def test_padding_bound_grows_with_symbols_and_bytes():
    assert decoder_padding(0, 0) > 0
    assert decoder_padding(10, 100) > decoder_padding(10, 0) > decoder_padding(0, 0)
