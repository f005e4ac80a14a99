"""The .stlic container: layout against a hand-built reference, round trip, every corruption."""
import random
import struct
import zlib

import pytest

from stlic.codec.bitstream import (
    FORMAT_VERSION,
    MAGIC,
    BitstreamError,
    Container,
    header_size,
    parse_container,
    write_container,
)

FINGERPRINT = bytes(range(8))


def _container(**changes):
    fields = dict(
        fingerprint=FINGERPRINT,
        encoder="",
        original_size=(70, 90),
        level=1.25,
        latent_shape=(2, 2),
        strings=((b"\x01\x02\x03",), (b"zz",)),
    )
    fields.update(changes)
    return Container(**fields)


def test_layout_matches_hand_built_bytes():
    """Every field at its documented place (lengths < 128 are one varint byte)."""
    body = (
        b"STLC" + bytes([FORMAT_VERSION]) + FINGERPRINT + bytes([0]) + struct.pack("<IIf", 70, 90, 1.25)
        + bytes([2, 2, 2]) + bytes([2, 1, 3, 1, 2]) + b"\x01\x02\x03zz"
    )
    expected = body + struct.pack("<I", zlib.crc32(body))
    assert write_container(_container()) == expected
    assert header_size(_container()) == len(expected) - 5
    tagged = write_container(_container(encoder="cuda float64"))
    assert tagged[13:27] == bytes([12]) + b"cuda float64" + struct.pack("<I", 70)[:1]
    assert parse_container(tagged).encoder == "cuda float64"


@pytest.mark.parametrize(
    "strings",
    [
        ((b"",),),
        ((bytes(300),), (b"a", b"bc")),  # 300 needs a two-byte varint; a group of two strings
        tuple((bytes([i]) * (i * 37),) for i in range(1, 7)),
    ],
)
def test_round_trip(strings):
    rng = random.Random(0)
    container = _container(
        original_size=(rng.randint(1, 5000), rng.randint(1, 5000)), latent_shape=(1, 3, 4), strings=strings
    )
    assert parse_container(write_container(container)) == container


def test_level_is_stored_as_float32():
    parsed = parse_container(write_container(_container(level=0.1)))
    assert parsed.level == struct.unpack("<f", struct.pack("<f", 0.1))[0] != 0.1


def test_truncation_at_every_byte_is_reported():
    data = write_container(_container(strings=((bytes(200),), (b"xy", b"z"))))
    for end in range(len(data)):
        with pytest.raises(BitstreamError, match="truncated"):
            parse_container(data[:end])


def test_every_single_byte_corruption_is_detected():
    data = write_container(_container())
    for position in range(len(data)):
        corrupted = bytearray(data)
        corrupted[position] ^= 0xA5
        with pytest.raises(BitstreamError):
            parse_container(bytes(corrupted))


def _patched(offset, raw):
    data = bytearray(write_container(_container()))
    data[offset : offset + len(raw)] = raw
    return bytes(data)


@pytest.mark.parametrize(
    "data,message",
    [
        (_patched(0, b"PNG\x89"), "magic"),
        (_patched(4, bytes([FORMAT_VERSION + 1])), f"version {FORMAT_VERSION + 1}"),
        (_patched(4, bytes([1])), "older stlic"),
        (_patched(13, bytes([65])), "encoder description"),
        (_patched(14, struct.pack("<II", 60000, 60000)), "out of range"),
        (_patched(14, struct.pack("<II", 0, 90)), "out of range"),
        (_patched(22, struct.pack("<f", float("nan"))), "rate level"),
        (_patched(26, bytes([0])), "latent shape rank"),
        (_patched(27, bytes([127])), "latent shape"),
        (_patched(29, bytes([0])), "string groups"),
        (_patched(29, bytes([200])), "string groups"),
        (_patched(30, bytes([0])), "string count of group 0"),
        (write_container(_container()) + b"\x00", "trailing garbage"),
        (_patched(35, b"\x00"), "checksum"),  # inside the payload
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_corruption_classes_name_the_problem(data, message):
    with pytest.raises(BitstreamError, match=message):
        parse_container(data)


def test_huge_declared_string_length_fails_before_slicing():
    """A length of 2**34 bytes is rejected from the header arithmetic, nothing is allocated."""
    head = write_container(_container())[:31]  # up to and including the first string count
    huge = bytes([0x80, 0x80, 0x80, 0x80, 0x40])  # varint 2**34
    with pytest.raises(BitstreamError, match="header declares"):
        parse_container(head + huge + bytes([1, 2]) + b"payload")


def test_overlong_varint_is_rejected():
    head = write_container(_container())[:31]
    with pytest.raises(BitstreamError, match="varint"):
        parse_container(head + b"\xff" * 6 + bytes(20))


def test_random_garbage_is_rejected():
    rng = random.Random(1)
    for length in (0, 3, 17, 64, 1000):
        for prefix in (b"", MAGIC + bytes([FORMAT_VERSION])):
            with pytest.raises(BitstreamError):
                parse_container(prefix + bytes(rng.getrandbits(8) for _ in range(length)))


def test_non_bytes_input_and_invalid_writes():
    with pytest.raises(BitstreamError, match="expected bytes"):
        parse_container("STLC")
    with pytest.raises(BitstreamError, match="fingerprint"):
        write_container(_container(fingerprint=b"short"))
    with pytest.raises(BitstreamError, match="string groups"):
        write_container(_container(strings=()))
    assert issubclass(BitstreamError, ValueError)
