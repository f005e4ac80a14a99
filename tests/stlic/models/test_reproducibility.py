"""The decoded latent is the same bit for bit whatever thread count, convolution kernels or
device decode it (float64 entropy-parameter path), and other numerics are a clear error."""
from __future__ import annotations

import contextlib

import pytest
import torch

from stlic.entropy.rans_stream import SymbolChecksumError
from stlic.models.lalic import LatentStrings


@contextlib.contextmanager
def other_numerics(threads: int = 2):
    """Another intra-op thread count and the native convolutions instead of oneDNN's: in float32
    they change the hyper-decoder's and context model's outputs in their last bits here."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.backends.mkldnn.flags(enabled=False):
            yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def image(photo_crop):
    return photo_crop(128, 192)


def _scales(main, image, dtype):
    """The scales of every y position, computed on the parameter path in ``dtype``."""
    from stlic.entropy.latent_coders import RoundingQuantizer

    saved, main.parameter_dtype = main.parameter_dtype, dtype
    try:
        y, z_symbols = main._analyse(image)
        entropy_model, hyper = main._parameter_path(z_symbols)
        quantizer = RoundingQuantizer(tuple(y.to(dtype).split(entropy_model.groups, 1)), entropy_model.gain(1.0))
        return entropy_model.run(hyper, quantizer).scales
    finally:
        main.parameter_dtype = saved


@torch.no_grad()
def test_other_numerics_move_float32_scales_but_not_float64_ones(tiny_model, image):
    """What makes the test below able to fail: the float32 path is not reproducible here."""
    main = tiny_model.main
    with other_numerics():
        float32_other, float64_other = _scales(main, image, torch.float32), _scales(main, image, torch.float64)
    assert not torch.equal(_scales(main, image, torch.float32), float32_other)
    assert torch.equal(_scales(main, image, torch.float64), float64_other)


@torch.no_grad()
def test_encode_one_thread_decode_two_threads_other_kernels(tiny_model, image):
    main = tiny_model.main
    torch.set_num_threads(1)
    strings = main.compress_latent(image, 1.0)
    reference = main.quantize_latent(image, 1.0)
    with other_numerics(threads=2):
        decoded = main.decompress_latent(strings, 1.0)
    assert torch.equal(decoded, reference)


@torch.no_grad()
def test_float32_encode_float64_decode_is_never_silently_wrong(tiny_model, image):
    """A float32-path file decoded on the float64 path: the same latent up to the float32 means,
    or the checksum error; never other symbols."""
    main = tiny_model.main
    main.parameter_dtype = torch.float32
    try:
        strings = main.compress_latent(image, 1.0)
        float32_latent = main.quantize_latent(image, 1.0)
    finally:
        main.parameter_dtype = torch.float64
    try:
        decoded = main.decompress_latent(strings, 1.0)
    except SymbolChecksumError as error:
        assert "float precision" in str(error)
    else:
        torch.testing.assert_close(decoded, float32_latent, rtol=0, atol=1e-5)


@torch.no_grad()
def test_other_entropy_parameters_are_a_clear_error(tiny_model, image):
    """Decoding at another rate level selects other CDFs for most symbols: the checksum says so."""
    main = tiny_model.main
    strings = main.compress_latent(image, 1.0)
    with pytest.raises(SymbolChecksumError, match="entropy parameters differ"):
        main.decompress_latent(strings, 4.0)
    z_broken = LatentStrings(strings.y_string, strings.z_string[:-4] + bytes(4), strings.z_shape)
    with pytest.raises(SymbolChecksumError, match="latent z"):
        main.decompress_latent(z_broken, 1.0)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("encode_on,decode_on", [("cuda", "cpu"), ("cpu", "cuda")])
@torch.no_grad()
def test_cross_device_decode_is_bit_exact(tiny_model, photo_crop, encode_on, decode_on):
    import copy

    image = photo_crop(256, 320)
    models = {"cpu": tiny_model, "cuda": copy.deepcopy(tiny_model).to("cuda")}
    strings = models[encode_on].main.compress_latent(image.to(encode_on), 1.0)
    reference = models[encode_on].main.quantize_latent(image.to(encode_on), 1.0).cpu()
    decoded = models[decode_on].main.decompress_latent(strings, 1.0).cpu()
    assert torch.equal(decoded, reference)
