"""File-level codec on a real tiny model: bit-exact decode, rate vs likelihoods, safety checks."""
import math

import numpy as np
import pytest
import torch

from stlic.codec.bitstream import BitstreamError, Container, header_size, parse_container, write_container
from stlic.codec.codec import bits_per_pixel, compress_image, decompress_image, find_level_for_bpp
from stlic.codec.fingerprint import model_fingerprint
from stlic.models import pad_to_multiple

LEVEL = 0.3  # not a float32 number: the file stores float32(1.3), and both sides must use it


@pytest.fixture(scope="module")
def encoded(coding_model, photo, tmp_path_factory):
    """The photo coded to a real file and read back."""
    path = tmp_path_factory.mktemp("codec") / "photo.stlic"
    path.write_bytes(compress_image(coding_model, photo, LEVEL))
    return path.read_bytes()


def test_decode_of_file_is_bit_identical_to_reconstruct(coding_model, photo, encoded):
    decoded = decompress_image(coding_model, encoded)
    level32 = float(np.float32(LEVEL))
    reference = coding_model.reconstruct(photo[None], level32)
    assert decoded.x_hat.shape == decoded.x_refined.shape == (1, 3, 70, 90)
    assert torch.equal(decoded.x_hat, reference.x_hat)
    assert torch.equal(decoded.x_refined, reference.x_refined)
    assert not torch.equal(decoded.x_refined, decoded.x_hat)
    assert parse_container(encoded).level == level32 != LEVEL


def test_decode_without_refiner_skips_it_and_keeps_x_hat(coding_model, encoded, monkeypatch):
    full = decompress_image(coding_model, encoded)

    def refiner_called(*_):
        raise AssertionError("refine=False must not run the refiner")

    monkeypatch.setattr(coding_model.refiner, "forward", refiner_called)
    decoded = decompress_image(coding_model, encoded, refine=False)
    assert torch.equal(decoded.x_hat, full.x_hat)
    assert decoded.x_refined is decoded.x_hat
    with pytest.raises(AssertionError, match="refine=False"):
        decompress_image(coding_model, encoded)


def test_file_rate_matches_likelihood_estimate(coding_model, photo, encoded):
    """bits(file) = -sum log2 p(y_hat, z_hat) within 1%, plus header/checksum and, per string, an
    8-byte rANS flush (CompressAI's 64-bit rANS state), a 4-byte chunk length and a 4-byte symbol checksum.

    Two effects make an untrained model's string *shorter* than its estimate: the estimate floors
    likelihoods at 1e-9 (checked away below), and CompressAI's 16-bit quantised CDFs give every
    in-table symbol at least 2**-16, so symbols the estimate prices above 16 bits cost less. With
    this fixture the y string is ~9% below its estimate; the whole file stays within the bound.
    """
    container = parse_container(encoded)
    with torch.no_grad():
        out = coding_model(pad_to_multiple(photo[None]), container.level)
    assert out.likelihoods["y"].min() > 1e-6, "fixture latent has far-tail symbols: lower LATENT_GAIN"
    estimate_bytes = sum(-likelihoods.log2().sum().item() for likelihoods in out.likelihoods.values()) / 8
    overhead = header_size(container) + 2 * (8 + 4 + 4)
    assert container.payload_bytes > 200  # enough symbols for the comparison to mean something
    assert abs(len(encoded) - estimate_bytes) <= 0.01 * estimate_bytes + overhead
    assert bits_per_pixel(encoded, photo) == pytest.approx(8 * len(encoded) / (70 * 90))


def test_file_from_another_model_is_refused(model_factory, encoded):
    other = model_factory(seed=1)
    with pytest.raises(BitstreamError, match="different model"):
        decompress_image(other, encoded)


def test_fingerprint_follows_the_weights(coding_model, model_factory):
    copy = model_factory()
    assert model_fingerprint(copy) == model_fingerprint(coding_model)
    with torch.no_grad():
        copy.refiner.head.bias[0] += 1e-3
    assert model_fingerprint(copy) != model_fingerprint(coding_model)


def _rewrap(data, **changes):
    container = parse_container(data)
    fields = {name: getattr(container, name) for name in Container.__dataclass_fields__}
    fields.update(changes)
    return write_container(Container(**fields))


@pytest.mark.parametrize(
    "changes,message",
    [
        (dict(latent_shape=(2, 3)), "latent shape"),
        (dict(original_size=(200, 90)), "latent shape"),
        (dict(level=7.0), "rate level"),
        (dict(strings=((b"y",), (b"z",), (b"extra",))), "one image"),
    ],
)
def test_consistent_container_that_does_not_fit_the_model_is_refused(coding_model, encoded, changes, message):
    with pytest.raises(BitstreamError, match=message):
        decompress_image(coding_model, _rewrap(encoded, **changes))


def test_every_truncation_of_a_real_file_is_refused_before_decoding(coding_model, encoded):
    for end in range(len(encoded)):
        with pytest.raises(BitstreamError, match="truncated"):
            decompress_image(coding_model, encoded[:end])


def test_corrupted_file_never_reaches_the_decoder(coding_model, encoded):
    corrupted = bytearray(encoded)
    corrupted[len(corrupted) // 2] ^= 0x10
    with pytest.raises(BitstreamError, match="checksum"):
        decompress_image(coding_model, bytes(corrupted))
    with pytest.raises(BitstreamError, match="truncated"):
        decompress_image(coding_model, encoded[:-1])


@pytest.mark.parametrize("level", [-0.5, 5.5, math.nan])
def test_level_outside_the_model_range_is_rejected(coding_model, photo, level):
    with pytest.raises(ValueError, match="rate level"):
        compress_image(coding_model, photo, level)


def test_bad_image_is_rejected(coding_model):
    with pytest.raises(ValueError, match="one RGB image"):
        compress_image(coding_model, torch.rand(2, 3, 8, 8), 0.0)
    with pytest.raises(ValueError, match="float tensor"):
        compress_image(coding_model, torch.zeros(3, 8, 8, dtype=torch.uint8), 0.0)


@pytest.fixture(scope="module")
def small_photo(photo):
    return photo[:, :64, :64].contiguous()


def test_target_bpp_search_hits_a_feasible_target(coding_model, small_photo):
    top = coding_model.n_levels - 1
    high = bits_per_pixel(compress_image(coding_model, small_photo, 0.0), small_photo)
    low = bits_per_pixel(compress_image(coding_model, small_photo, top), small_photo)
    assert high > 1.5 * low  # the level really moves the rate
    target = math.sqrt(high * low)
    result = find_level_for_bpp(coding_model, small_photo, target, rel_tolerance=0.05)
    assert result.feasible and 0 < result.level < top
    assert result.relative_error <= 0.05
    assert result.bpp == bits_per_pixel(result.data, small_photo)
    assert parse_container(result.data).level == result.level


def test_target_bpp_search_reports_an_infeasible_target(coding_model, small_photo):
    result = find_level_for_bpp(coding_model, small_photo, 1000.0)
    rates = [bits_per_pixel(compress_image(coding_model, small_photo, float(level)), small_photo)
             for level in range(coding_model.n_levels)]
    assert not result.feasible and result.iterations == coding_model.n_levels  # every integer level was tried
    assert result.level == float(max(range(len(rates)), key=rates.__getitem__)) and result.bpp == max(rates)
    with pytest.raises(ValueError, match="target bpp"):
        find_level_for_bpp(coding_model, small_photo, -1.0)


def test_target_bpp_search_finds_a_rate_between_levels_not_ordered_by_rate(model_factory, small_photo):
    """Level 1's gain above level 0's (as in pretrained/lalic_tiny_rd): level 1 spends more bits than
    level 0, and a rate between the two is only found by looking inside the level range."""
    model = model_factory()
    with torch.no_grad():
        model.main.entropy_model.gain.log_gains[0] = 0.7  # a_1 = 2 > a_0 = 1: a finer quantiser
    rates = [bits_per_pixel(compress_image(model, small_photo, float(level)), small_photo) for level in (0, 1)]
    top = bits_per_pixel(compress_image(model, small_photo, float(model.n_levels - 1)), small_photo)
    assert rates[1] > 1.2 * rates[0] > 1.2 * top  # level 1 > level 0 > last level in bits
    target = math.sqrt(rates[0] * rates[1])
    result = find_level_for_bpp(model, small_photo, target, rel_tolerance=0.05)
    assert result.feasible and 0 < result.level < 1 and result.relative_error <= 0.05
