"""The ``.stlic`` container: a versioned, checksummed header in front of the rANS strings.

Layout (little-endian; ``varint`` = unsigned LEB128)::

    magic        4 B   b"STLC"
    version      1 B   FORMAT_VERSION
    fingerprint  8 B   model fingerprint (see :mod:`stlic.codec.fingerprint`)
    encoder      u8    length, then that many ASCII bytes: the encoder's device and numerics
                       (named in the error when a decoder's entropy parameters differ)
    height       u32   original image height (before padding)
    width        u32   original image width
    level        f32   continuous QVRF rate level
    n_dims       u8    latent shape rank, then n_dims x varint
    n_groups     u8    string groups (e.g. y, z), then per group: n_strings u8,
                       then n_strings x varint byte lengths
    payload            the strings, concatenated in order
    crc32        u32   zlib.crc32 of every byte before it

:func:`parse_container` validates each field against hard limits *before* allocating or
slicing anything, so a truncated, foreign or corrupted file raises :class:`BitstreamError`
with the reason, instead of reaching the entropy decoder.
"""
from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

MAGIC = b"STLC"
FORMAT_VERSION = 2
#: version 1 files (no symbol checksum, unchunked strings) are refused with this note
OLD_VERSIONS = {1: "written by an older stlic without symbol checksums; re-encode the image"}
MAX_ENCODER_BYTES = 64
FINGERPRINT_BYTES = 8
#: largest image accepted (pixels): 2**28 = 16384 x 16384
MAX_PIXELS = 1 << 28
MAX_SIDE = 1 << 16
MAX_DIMS = 8
MAX_GROUPS = 64
MAX_STRINGS_PER_GROUP = 64
_CRC = struct.Struct("<I")


class BitstreamError(ValueError):
    """The bytes are not a valid ``.stlic`` container for this decoder (message says why)."""


@dataclass(frozen=True)
class Container:
    """Everything an ``.stlic`` file holds."""

    fingerprint: bytes
    encoder: str
    original_size: tuple[int, int]
    level: float
    latent_shape: tuple[int, ...]
    strings: tuple[tuple[bytes, ...], ...]

    @property
    def payload_bytes(self) -> int:
        return sum(len(s) for group in self.strings for s in group)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _check_header(original_size: tuple[int, int], level: float, latent_shape: tuple[int, ...]) -> None:
    """Limits on the header fields, applied alike by the writer and the reader."""
    height, width = original_size
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE) or height * width > MAX_PIXELS:
        raise BitstreamError(
            f"image size {height}x{width} out of range (sides 1..{MAX_SIDE}, at most {MAX_PIXELS} pixels)"
        )
    if not math.isfinite(level) or level < 0:
        raise BitstreamError(f"rate level {level} is not a finite non-negative number")
    if not 1 <= len(latent_shape) <= MAX_DIMS:
        raise BitstreamError(f"latent shape rank {len(latent_shape)} not in 1..{MAX_DIMS}")
    if any(not 1 <= d <= max(height, width) for d in latent_shape):
        raise BitstreamError(f"latent shape {latent_shape} impossible for a {height}x{width} image")


def _check_count(count: int, limit: int, what: str) -> None:
    if not 1 <= count <= limit:
        raise BitstreamError(f"{what} is {count}, not in 1..{limit}")


def write_container(container: Container) -> bytes:
    """Serialise ``container`` (raises BitstreamError for a field outside the format's limits)."""
    if len(container.fingerprint) != FINGERPRINT_BYTES:
        raise BitstreamError(f"fingerprint must be {FINGERPRINT_BYTES} bytes, got {len(container.fingerprint)}")
    _check_header(container.original_size, container.level, container.latent_shape)
    encoder = container.encoder.encode("ascii", errors="replace")
    if len(encoder) > MAX_ENCODER_BYTES:
        raise BitstreamError(f"encoder description longer than {MAX_ENCODER_BYTES} bytes: {container.encoder!r}")
    _check_count(len(container.strings), MAX_GROUPS, "number of string groups")
    for index, group in enumerate(container.strings):
        _check_count(len(group), MAX_STRINGS_PER_GROUP, f"string count of group {index}")
    out = bytearray(MAGIC)
    out.append(FORMAT_VERSION)
    out += container.fingerprint
    out.append(len(encoder))
    out += encoder
    out += struct.pack("<IIf", *container.original_size, container.level)
    out.append(len(container.latent_shape))
    for dim in container.latent_shape:
        out += _varint(dim)
    out.append(len(container.strings))
    for group in container.strings:
        out.append(len(group))
        for string in group:
            out += _varint(len(string))
    for group in container.strings:
        for string in group:
            out += string
    out += _CRC.pack(zlib.crc32(out))
    return bytes(out)


class _Reader:
    """Bounds-checked cursor over the file bytes."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, count: int, what: str) -> bytes:
        if self.pos + count > len(self.data):
            raise BitstreamError(
                f"truncated file: {what} needs {count} bytes at offset {self.pos}, "
                f"only {len(self.data) - self.pos} left of {len(self.data)}"
            )
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def varint(self, what: str) -> int:
        value = 0
        for shift in range(0, 35, 7):  # at most 5 bytes: values < 2**35
            byte = self.u8(what)
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
        raise BitstreamError(f"{what}: varint longer than 5 bytes at offset {self.pos}")


def parse_container(data: bytes) -> Container:
    """Parse and validate ``data``; raises BitstreamError naming the first problem found."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BitstreamError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    reader = _Reader(data)
    magic = reader.take(len(MAGIC), "magic")
    if magic != MAGIC:
        raise BitstreamError(f"not an .stlic file: magic is {magic!r}, expected {MAGIC!r}")
    version = reader.u8("format version")
    if version in OLD_VERSIONS:
        raise BitstreamError(f"format version {version}: {OLD_VERSIONS[version]}")
    if version != FORMAT_VERSION:
        raise BitstreamError(
            f"unsupported format version {version} (this decoder reads version {FORMAT_VERSION})"
        )
    fingerprint = reader.take(FINGERPRINT_BYTES, "model fingerprint")
    encoder_length = reader.u8("encoder description length")
    if encoder_length > MAX_ENCODER_BYTES:
        raise BitstreamError(f"encoder description of {encoder_length} bytes, more than {MAX_ENCODER_BYTES}")
    encoder = reader.take(encoder_length, "encoder description").decode("ascii", errors="replace")
    height, width, level = struct.unpack("<IIf", reader.take(12, "image size and rate level"))
    n_dims = reader.u8("latent rank")
    _check_count(n_dims, MAX_DIMS, "latent shape rank")
    latent_shape = tuple(reader.varint("latent shape") for _ in range(n_dims))
    _check_header((height, width), level, latent_shape)
    n_groups = reader.u8("number of string groups")
    _check_count(n_groups, MAX_GROUPS, "number of string groups")
    lengths = []
    for index in range(n_groups):
        count = reader.u8(f"string count of group {index}")
        _check_count(count, MAX_STRINGS_PER_GROUP, f"string count of group {index}")
        lengths.append([reader.varint(f"string length in group {index}") for _ in range(count)])
    expected_end = reader.pos + sum(map(sum, lengths)) + _CRC.size
    if expected_end > len(data):
        raise BitstreamError(
            f"truncated file: header declares {expected_end} bytes, file has {len(data)}"
        )
    if expected_end < len(data):
        raise BitstreamError(f"{len(data) - expected_end} bytes of trailing garbage after the container")
    strings = tuple(
        tuple(reader.take(n, f"string of group {index}") for n in group) for index, group in enumerate(lengths)
    )
    (stored_crc,) = _CRC.unpack(reader.take(_CRC.size, "checksum"))
    if stored_crc != zlib.crc32(data[: reader.pos - _CRC.size]):
        raise BitstreamError("checksum mismatch: the file is corrupted")
    return Container(fingerprint, encoder, (height, width), level, latent_shape, strings)


def header_size(container: Container) -> int:
    """Bytes of the container that are not payload (header + checksum)."""
    return len(write_container(container)) - container.payload_bytes
