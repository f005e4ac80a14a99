"""Entropy coding: decompress(compress(x)) == reconstruct(x) bit for bit, any image size, and
coded size against the likelihood estimate."""
from __future__ import annotations

import pytest
import torch

from stlic.models import STLIC, pad_to_multiple


@pytest.mark.parametrize(
    "height, width, level",
    [(64, 64, 0.0), (80, 100, 2.5), (128, 192, 5.0), (33, 47, 1.25)],
)
def test_decode_equals_reconstruct_bit_for_bit(tiny_model, photo_crop, height, width, level):
    x = photo_crop(height, width)
    code = tiny_model.compress(x, level)
    assert code.original_size == (height, width)
    assert code.shape == (-(-height // 64), -(-width // 64))
    decoded = tiny_model.decompress(code.strings, code.shape, code.level, code.original_size)
    expected = tiny_model.reconstruct(x, level)
    assert decoded.x_hat.shape == x.shape and decoded.x_refined.shape == x.shape
    assert torch.equal(decoded.x_hat, expected.x_hat)
    assert torch.equal(decoded.x_refined, expected.x_refined)
    assert 0 <= decoded.x_hat.min() and decoded.x_hat.max() <= 1


def test_batch_codes_each_image_and_decodes_exactly(lean_model, photo_crop):
    x = torch.cat([photo_crop(48, 40, top=0, left=0), photo_crop(48, 40)])
    code = lean_model.compress(x, 3.0)
    assert len(code.strings) == 2 and all(len(s) == 2 for s in code.strings)
    decoded = lean_model.decompress(code.strings, code.shape, code.level, code.original_size)
    assert torch.equal(decoded.x_hat, lean_model.reconstruct(x, 3.0).x_hat)
    single = lean_model.compress(x[1:], 3.0)
    assert single.strings[0][0] == code.strings[0][1]  # per-image coding: batch does not matter
    # without original_size the decoder returns the padded size
    padded = lean_model.decompress(code.strings, code.shape, code.level)
    assert padded.x_hat.shape[-2:] == (64, 64)
    assert torch.equal(padded.x_hat[..., :48, :40], decoded.x_hat)


def test_bad_inputs_raise(lean_model, photo_crop):
    code = lean_model.compress(photo_crop(64, 64), 0.0)
    with pytest.raises(ValueError, match="y_strings, z_strings"):
        lean_model.decompress([code.strings[0]], code.shape, 0.0)
    with pytest.raises(ValueError, match="does not fit"):
        lean_model.decompress(code.strings, code.shape, 0.0, original_size=(65, 10))
    with pytest.raises(ValueError, match="rate level"):
        lean_model.compress(photo_crop(64, 64), 7.0)
    with pytest.raises(ValueError, match="non-empty image batch"):
        lean_model.reconstruct(torch.rand(1, 3, 0, 5))


def test_padding_replicates_edges():
    x = torch.arange(2 * 3 * 3, dtype=torch.float32).view(1, 3, 2, 3)
    padded = pad_to_multiple(x, 4)
    assert padded.shape == (1, 3, 4, 4)
    assert torch.equal(padded[..., :2, :3], x)
    assert torch.equal(padded[..., 3, :3], x[..., 1, :])  # bottom rows repeat the last row
    assert torch.equal(padded[..., :2, 3], x[..., :, 2])  # right columns repeat the last column


def _fit_entropy_model(model: STLIC, x: torch.Tensor, steps: int) -> None:
    """A few Adam steps on the rate of y alone, so that the predicted scales fit this image."""
    main = model.main
    with torch.no_grad():
        y = main.g_a(x)
        z_hat = main.entropy_bottleneck.quantize(main.h_a(y), "dequantize", main.z_medians())
        hyper = main.h_s(z_hat)
    params = [p for name, p in main.entropy_model.named_parameters() if not name.startswith("gain")]
    optimizer = torch.optim.Adam(params, lr=5e-3)
    main.entropy_model.train()
    for step in range(steps):
        _, likelihoods = main.entropy_model(y, hyper, (0.0, 2.5, 5.0)[step % 3])
        optimizer.zero_grad()
        (-torch.log2(likelihoods).sum()).backward()
        optimizer.step()
    model.eval()


@pytest.mark.slow
def test_coded_bits_match_likelihood_estimate(photo_crop):
    """Coded size within 1% of -sum log2 p (+ 16 bytes of coder overhead per string)."""
    torch.manual_seed(0)
    model = STLIC("tiny")
    with torch.no_grad():
        model.main.g_a[-1].weight.mul_(20.0)
    x = photo_crop(128, 192)
    _fit_entropy_model(model, x, steps=9)
    model.update(force=True)
    for level in (0.0, 2.5, 5.0):
        with torch.no_grad():
            estimate = {k: -torch.log2(v).sum().item() for k, v in model(x, level).likelihoods.items()}
        code = model.compress(x, level)
        for name, strings in zip(("y", "z"), code.strings):
            coded = 8 * len(strings[0])
            assert coded <= 1.01 * estimate[name] + 8 * 16, (name, level, coded, estimate[name])
            assert coded >= 0.99 * estimate[name], (name, level, coded, estimate[name])
