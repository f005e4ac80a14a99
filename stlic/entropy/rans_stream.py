"""The strings of one image (y and z): chunked rANS streams, bounded decoding and a symbol checksum.

CompressAI's ``RansDecoder`` (C++) reads 32-bit words from its string without bounds checks:
on a short or forged string it reads past the end (SIGSEGV, or garbage that "decodes"). The
strings therefore carries what the decoder needs to stay inside its buffers::

    chunk lengths   u32 per chunk, ceil(n_symbols / CHUNK_SYMBOLS) chunks
    chunks          CompressAI rANS streams (Rans64: whole 32-bit words, at least 8 bytes)
    checksum        u32, zlib.crc32 of (CDF index, symbol) int32 pairs in coding order,
                    continuing from a seed (the y string's seed is the z string's checksum,
                    so a y string spliced from another file fails too)

Each chunk codes at most ``CHUNK_SYMBOLS`` consecutive symbols (the passes of the SCCTX walk
may cross chunks) and is decoded from a copy padded with ``decoder_padding`` zero bytes: the
most any string, valid or forged, can make the decoder read past its end (see there). The
layout is validated (lengths, word multiples, total size) before any decoding.

The checksum covers the CDF *indexes* as well as the symbols: a decoder whose entropy
parameters differ from the encoder's (another device, thread count or float precision)
picks other CDFs and fails it, instead of returning a silently wrong image.
"""
from __future__ import annotations

import struct
import zlib
import torch
from compressai.ans import BufferedRansEncoder, RansDecoder
from torch import Tensor

#: symbols per rANS stream: bounds the decoder's padding (~25 MB) for 8 + 4 bytes per chunk
CHUNK_SYMBOLS = 1 << 18
#: Rans64 writes whole 32-bit words and flushes its 64-bit state: 8 bytes at least
WORD_BYTES, MIN_STREAM_BYTES = 4, 8
_U32 = struct.Struct("<I")


class LatentStringError(ValueError):
    """A string is malformed (wrong layout for the image size it claims)."""


class SymbolChecksumError(ValueError):
    """Decoded symbols / CDF indexes differ from the encoder's: other numerics, or a corrupt file.

    ``latent`` names the string ("y" or "z")."""

    def __init__(self, message: str, latent: str) -> None:
        super().__init__(message)
        self.latent = latent


def decoder_padding(n_symbols: int, n_bytes: int) -> int:
    """Zero bytes after a stream that CompressAI's ``RansDecoder`` can read at most.

    Per symbol the decoder renormalises once (one word) and, for an escaped value, reads 4-bit
    bypass chunks: a run of 15s (their count) then that many value chunks, one word per eight.
    Past the data only zero words arrive, so a run of 15s ends within the 64-bit state (<= 9
    chunks, <= 135 value chunks: ~20 words). Inside the data a forged run can span all 2 chunks
    per byte, then 15x as many value chunks: 2 words per byte. Hence, with margin::

        padding <= 96 * n_symbols + 16 * n_bytes + 64
    """
    return 96 * n_symbols + 16 * n_bytes + 64


def n_chunks(n_symbols: int) -> int:
    return -(-n_symbols // CHUNK_SYMBOLS)


def _crc(crc: int, indexes: Tensor, symbols: Tensor) -> int:
    pairs = torch.stack([indexes.to(torch.int32), symbols.to(torch.int32)], dim=1)
    return zlib.crc32(pairs.cpu().numpy().tobytes(), crc)


class CdfTables:
    """CompressAI's CDF tables as the Python lists its rANS coder wants."""

    def __init__(self, quantized_cdf: Tensor, cdf_length: Tensor, offset: Tensor) -> None:
        if quantized_cdf.numel() == 0:
            raise RuntimeError("entropy model has no CDF tables yet: call model.update() before coding")
        self.cdfs = quantized_cdf.tolist()
        self.lengths = cdf_length.reshape(-1).int().tolist()
        self.offsets = offset.reshape(-1).int().tolist()


class ChunkedRansEncoder:
    """Codes (index, symbol) pairs in order into chunks of at most CHUNK_SYMBOLS symbols."""

    def __init__(self, tables: CdfTables, seed: int = 0) -> None:
        self.tables = tables
        self.chunks: list[bytes] = []
        self.encoder, self.in_chunk, self.crc = BufferedRansEncoder(), 0, seed

    def encode(self, indexes: Tensor, symbols: Tensor) -> None:
        """Code 1-d int tensors of CDF indexes and symbols (same length)."""
        self.crc = _crc(self.crc, indexes, symbols)
        start, t = 0, self.tables
        while start < len(indexes):
            stop = min(len(indexes), start + CHUNK_SYMBOLS - self.in_chunk)
            self.encoder.encode_with_indexes(
                symbols[start:stop].tolist(), indexes[start:stop].tolist(), t.cdfs, t.lengths, t.offsets
            )
            self.in_chunk += stop - start
            start = stop
            if self.in_chunk == CHUNK_SYMBOLS:
                self._flush()

    def _flush(self) -> None:
        self.chunks.append(self.encoder.flush())
        self.encoder, self.in_chunk = BufferedRansEncoder(), 0

    def finish(self) -> bytes:
        if self.in_chunk or not self.chunks:
            self._flush()
        header = b"".join(_U32.pack(len(chunk)) for chunk in self.chunks)
        return header + b"".join(self.chunks) + _U32.pack(self.crc)


def split_chunks(string: bytes, n_symbols: int, name: str = "y") -> list[bytes]:
    """Validate the layout of string ``name`` for ``n_symbols`` symbols and return its chunks."""
    if not isinstance(string, (bytes, bytearray)):
        raise LatentStringError(f"{name} string must be bytes, got {type(string).__name__}")
    count = n_chunks(n_symbols)
    pos = count * _U32.size
    if len(string) < pos:
        raise LatentStringError(
            f"{name} string of {len(string)} bytes is too short for the {count} chunk lengths of "
            f"{n_symbols} symbols (truncated or empty)"
        )
    lengths = [_U32.unpack_from(string, index * _U32.size)[0] for index in range(count)]
    for index, value in enumerate(lengths):
        if value < MIN_STREAM_BYTES or value % WORD_BYTES:
            raise LatentStringError(
                f"{name} string: chunk {index} declares {value} bytes; a rANS stream is a multiple of "
                f"{WORD_BYTES} bytes, at least {MIN_STREAM_BYTES}"
            )
    expected = pos + sum(lengths) + _U32.size
    if expected != len(string):
        raise LatentStringError(
            f"{name} string is {len(string)} bytes but its chunk table declares {expected} "
            f"({n_symbols} symbols in {count} chunks)"
        )
    chunks = []
    for length in lengths:
        chunks.append(bytes(string[pos:pos + length]))
        pos += length
    return chunks


class ChunkedRansDecoder:
    """Decodes what ChunkedRansEncoder wrote, never reading outside its (padded) buffers."""

    def __init__(self, string: bytes, n_symbols: int, tables: CdfTables, name: str = "y", seed: int = 0) -> None:
        self.chunks = split_chunks(string, n_symbols, name)
        (self.expected_crc,) = _U32.unpack(bytes(string[-_U32.size:]))
        self.tables, self.n_symbols, self.name = tables, n_symbols, name
        self.decoded, self.crc, self.chunk, self.left = 0, seed, -1, 0
        self.decoder = RansDecoder()

    def _next_chunk(self) -> None:
        self.chunk += 1
        symbols = min(CHUNK_SYMBOLS, self.n_symbols - CHUNK_SYMBOLS * self.chunk)
        data = self.chunks[self.chunk]
        self.decoder = RansDecoder()
        self.decoder.set_stream(data + bytes(decoder_padding(symbols, len(data))))
        self.chunks[self.chunk] = b""  # the decoder holds its own copy
        self.left = symbols

    def decode(self, indexes: Tensor) -> Tensor:
        """int32 symbols for a 1-d tensor of CDF indexes (the next ones in coding order)."""
        if self.decoded + len(indexes) > self.n_symbols:
            raise LatentStringError(f"asked for more than the {self.n_symbols} symbols the string holds")
        index_list, out, start, t = indexes.tolist(), [], 0, self.tables
        while start < len(index_list):
            if self.left == 0:
                self._next_chunk()
            stop = min(len(index_list), start + self.left)
            out += self.decoder.decode_stream(index_list[start:stop], t.cdfs, t.lengths, t.offsets)
            self.left -= stop - start
            start = stop
        self.decoded += len(index_list)
        symbols = torch.tensor(out, dtype=torch.int32)
        self.crc = _crc(self.crc, indexes, symbols)
        return symbols

    def verify(self) -> None:
        """Raise SymbolChecksumError unless every symbol was decoded with the encoder's CDFs."""
        if self.decoded != self.n_symbols or self.crc != self.expected_crc:
            cause = ("this decoder's entropy parameters differ from the encoder's (other device, thread "
                     "count or float precision) or " if self.name == "y" else "")
            raise SymbolChecksumError(
                f"decoded latent {self.name} fails the encoder's checksum of CDF indexes and symbols: "
                f"{cause}the file is corrupted", self.name,
            )
