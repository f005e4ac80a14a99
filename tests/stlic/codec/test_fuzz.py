"""Hostile .stlic files with valid container checksums: every case is a clear error or the
correct image (never a crash, a huge allocation or a silently wrong image)."""
import dataclasses
import random

import numpy as np
import pytest
import torch

from stlic.codec.bitstream import BitstreamError, parse_container, write_container
from stlic.codec.codec import DECODE_MAX_PIXELS, compress_image, decompress_image
from stlic.entropy.rans_stream import SymbolChecksumError


@pytest.fixture(scope="module")
def encoded(coding_model, photo):
    return compress_image(coding_model, photo, 1.0)


@pytest.fixture(scope="module")
def reference(coding_model, encoded):
    return decompress_image(coding_model, encoded).x_refined


def _recontainer(data, **changes):
    """The file with fields changed and the container checksum recomputed (a forger's file)."""
    return write_container(dataclasses.replace(parse_container(data), **changes))


def _outcome(model, data, reference):
    """'error' for a refusal with a message, 'same' for the correct image; anything else fails."""
    try:
        decoded = decompress_image(model, data).x_refined
    except (BitstreamError, SymbolChecksumError) as error:
        assert str(error)
        return "error"
    assert torch.equal(decoded, reference), "a corrupted file decoded silently to another image"
    return "same"


@pytest.mark.parametrize("size", [(256, 256), (1024, 1024), (2048, 2048), (16384, 16384)])
def test_declared_size_with_empty_strings_is_refused_before_allocating(coding_model, encoded, size):
    """The file of issue 13: a valid checksum and fingerprint, a large size, empty strings."""
    shape = (-(-size[0] // 64), -(-size[1] // 64))
    data = _recontainer(encoded, original_size=size, latent_shape=shape, strings=((b"",), (b"",)))
    with pytest.raises(BitstreamError, match="too short|exceeds this decoder's limit"):
        decompress_image(coding_model, data)


def test_pixel_limit_is_checked_before_the_strings(coding_model, encoded):
    side = int(DECODE_MAX_PIXELS ** 0.5) + 64
    data = _recontainer(encoded, original_size=(side, side), latent_shape=(-(-side // 64),) * 2)
    with pytest.raises(BitstreamError, match="limit of"):
        decompress_image(coding_model, data)
    with pytest.raises(BitstreamError, match="limit of 100 pixels"):
        decompress_image(coding_model, encoded, max_pixels=100)


def test_strings_of_another_image_size_are_refused(coding_model, encoded):
    """The real strings under a larger declared size: their chunk tables do not add up."""
    data = _recontainer(encoded, original_size=(300, 300), latent_shape=(5, 5))
    with pytest.raises((BitstreamError, SymbolChecksumError), match="string|checksum"):
        decompress_image(coding_model, data)


def test_bit_flips_in_the_strings(coding_model, encoded, reference):
    """Single-bit flips in y and z with the container checksum recomputed."""
    container = parse_container(encoded)
    rng = random.Random(0)
    outcomes = []
    for group in (0, 1):
        string = container.strings[group][0]
        positions = sorted({*range(8), *range(len(string) - 4, len(string)), *rng.sample(range(len(string)), 12)})
        for position in positions:
            flipped = bytearray(string)
            flipped[position] ^= 1 << rng.randrange(8)
            strings = list(container.strings)
            strings[group] = (bytes(flipped),)
            outcomes.append(_outcome(coding_model, _recontainer(encoded, strings=tuple(strings)), reference))
    assert outcomes.count("error") >= len(outcomes) - 2  # a flip in the last rANS bits may be harmless


def test_garbage_strings_with_a_valid_layout(coding_model, encoded, reference):
    """Forged chunk tables in front of garbage reach the rANS decoder: it stays in bounds and the
    symbol checksum refuses the result."""
    container = parse_container(encoded)
    rng = np.random.default_rng(0)
    for body_length in (8, 64, 4096):
        for body in (b"\xff" * body_length, rng.integers(0, 256, body_length, dtype=np.uint8).tobytes()):
            string = body_length.to_bytes(4, "little") + body + bytes(4)
            for strings in (((string,), container.strings[1]), (container.strings[0], (string,))):
                assert _outcome(coding_model, _recontainer(encoded, strings=strings), reference) == "error"


def test_strings_swapped_between_files_fail_the_checksum(model_factory, photo):
    """A y string of another image of the same size: the right layout and its own symbols, but
    the y checksum continues z's, so the splice is refused."""
    model = model_factory()
    with torch.no_grad():
        model.main.h_a[-1].weight.mul_(30.0)  # a z that depends on the image
    model.update(force=True)
    encoded = compress_image(model, photo, 1.0)
    other = parse_container(compress_image(model, 1 - photo.flip(-1), 1.0))
    assert other.strings[1] != parse_container(encoded).strings[1]  # another z
    strings = (other.strings[0], parse_container(encoded).strings[1])
    with pytest.raises(SymbolChecksumError, match="the file is damaged .*numerics are the same, 'cpu float64"):
        decompress_image(model, _recontainer(encoded, strings=strings))


def test_checksum_message_names_what_differs(coding_model, encoded):
    """Flipped y strings under forged encoder numerics: the message lists exactly the fields that
    differ from this decoder's, and says 'damaged' when none does."""
    container = parse_container(encoded)
    here = container.encoder.split(" ", 2)  # this test's encoder is this decoder
    rng = random.Random(1)
    forged = {"cuda": ("device", here[0], "cuda"), "float32": ("precision", here[1], "float32"),
              "torch 0.0.1": ("library", here[2], "torch 0.0.1")}
    failures = 0
    for trial in range(12):
        string = bytearray(container.strings[0][0])
        string[rng.randrange(4, len(string))] ^= 1 << rng.randrange(8)
        fields = [f for f in forged if rng.random() < 0.5]
        encoder = " ".join(next((f for f in fields if forged[f][1] == part), part) for part in here)
        data = _recontainer(encoded, strings=((bytes(string),), container.strings[1]), encoder=encoder)
        try:
            decompress_image(coding_model, data)
        except SymbolChecksumError as error:
            failures += 1
            message = str(error)
            if not fields:
                assert "the file is damaged" in message and "numerics are the same" in message
            for field, (name, ours, theirs) in forged.items():
                assert (f"{name} '{theirs}' -> '{ours}'" in message) == (field in fields), message
    assert failures >= 10
