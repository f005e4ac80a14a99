"""OmniShift re-parameterisation and the Bi-RWKV block (shapes, gradients, raster token order)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stlic.layers import BiRWKVBlock, OmniShift
from stlic.layers.rwkv import ChannelMix, SpatialMix, set_wkv_mode
from stlic.layers.wkv import bi_wkv_reference


def _randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen))
    return module


def test_omnishift_reparameterise_is_exact():
    shift = _randomise(OmniShift(6)).eval()
    x = torch.randn(2, 6, 9, 7)
    branches = shift(x)
    shift.reparameterise()
    fused = shift(x)
    torch.testing.assert_close(fused, branches, rtol=1e-5, atol=1e-5)
    keys = set(shift.state_dict())
    assert keys == {"alpha", "conv1x1.weight", "conv3x3.weight", "conv5x5.weight"}


def test_omnishift_branches_match_explicit_convolutions():
    shift = _randomise(OmniShift(3)).double()
    x = torch.randn(1, 3, 6, 5, dtype=torch.float64)
    a0, a1, a2, a3 = shift.alpha
    expected = (a0 * x + a1 * x * shift.conv1x1.weight.view(1, 3, 1, 1)
                + a2 * F.conv2d(x, shift.conv3x3.weight, padding=1, groups=3)
                + a3 * F.conv2d(x, shift.conv5x5.weight, padding=2, groups=3))
    torch.testing.assert_close(shift(x), expected)
    with torch.no_grad():
        shift.alpha.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
    shift.eval().reparameterise()
    torch.testing.assert_close(shift(x), x)  # identity branch alone folds to a centred delta


def test_omnishift_train_drops_stale_fused_kernel():
    shift = _randomise(OmniShift(4)).eval().reparameterise()
    shift.train()
    with torch.no_grad():
        shift.conv3x3.weight.add_(1.0)
    x = torch.randn(1, 4, 5, 5)
    a0, a1, a2, a3 = shift.alpha
    expected = a0 * x + a1 * shift.conv1x1(x) + a2 * shift.conv3x3(x) + a3 * shift.conv5x5(x)
    torch.testing.assert_close(shift(x), expected)


def test_omnishift_loading_weights_drops_cached_kernel():
    shift = _randomise(OmniShift(4)).eval().reparameterise()
    other = _randomise(OmniShift(4), seed=1).eval()
    shift.load_state_dict(other.state_dict())
    x = torch.randn(1, 4, 6, 6)
    torch.testing.assert_close(shift(x), other(x))


@pytest.mark.parametrize("size", [(8, 8), (5, 7), (1, 1)])
def test_block_keeps_shape_and_every_parameter_gets_gradient(size):
    block = BiRWKVBlock(8, hidden_rate=2)
    x = torch.randn(2, 8, *size, requires_grad=True)
    out = block(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    out.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for name, param in block.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        # with one token, Bi-WKV returns v: decay, boost and the key projection get no gradient
        single_token = size == (1, 1) and name.endswith(("decay", "boost", "spatial_mix.key.weight"))
        assert single_token or param.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_block_with_zero_gains_is_identity():
    block = BiRWKVBlock(4)
    with torch.no_grad():
        block.gamma1.zero_()
        block.gamma2.zero_()
    x = torch.randn(1, 4, 3, 3)
    torch.testing.assert_close(block(x), x)


@pytest.mark.parametrize("mode,height,width", [("paper", 4, 5), ("kernel", 9, 8)])
def test_spatial_mix_uses_raster_token_order(mode, height, width):
    """SpatialMix against a per-pixel rebuild: token t = h * W + w, WKV by the O(T^2) formula
    (kernel mode beyond 64 tokens, where it differs from the paper's formula)."""
    mix = _randomise(SpatialMix(3, wkv_mode=mode)).double()
    x = torch.randn(2, 3, height, width, dtype=torch.float64)
    shifted = mix.shift(x)
    tokens = torch.stack([shifted[:, :, h, w] for h in range(height) for w in range(width)], dim=1)
    steps = height * width
    wkv = bi_wkv_reference(mix.decay / steps, mix.boost / steps, mix.key(tokens), mix.value(tokens),
                           mode=mode)
    out_tokens = mix.output(torch.sigmoid(mix.receptance(tokens)) * wkv)
    expected = torch.empty_like(x)
    for t in range(steps):
        expected[:, :, t // width, t % width] = out_tokens[:, t]
    torch.testing.assert_close(mix(x), expected)


def test_channel_mix_matches_formula():
    mix = _randomise(ChannelMix(3, hidden_rate=2)).double()
    x = torch.randn(1, 3, 2, 3, dtype=torch.float64)
    s = mix.shift(x).permute(0, 2, 3, 1)  # channels last
    expected = (torch.relu(s @ mix.key.weight.T) ** 2 @ mix.value.weight.T) * torch.sigmoid(
        s @ mix.receptance.weight.T)
    torch.testing.assert_close(mix(x), expected.permute(0, 3, 1, 2))


def test_block_gradcheck_float64_tiny():
    block = _randomise(BiRWKVBlock(2, hidden_rate=1)).double()
    x = torch.randn(1, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(block, (x,))


@pytest.mark.parametrize("module", [BiRWKVBlock(4), SpatialMix(4), ChannelMix(4), OmniShift(4)])
def test_wrong_channel_count_names_the_problem(module):
    with pytest.raises(ValueError, match=r"\(B, 4, H, W\)"):
        module(torch.zeros(1, 3, 4, 4))


def test_set_wkv_mode_reaches_every_spatial_mix():
    model = torch.nn.Sequential(BiRWKVBlock(4), torch.nn.Conv2d(4, 4, 1), BiRWKVBlock(4))
    assert set_wkv_mode(model, "kernel") == 2
    assert [m.wkv_mode for m in model.modules() if isinstance(m, SpatialMix)] == ["kernel", "kernel"]
    assert "wkv_mode='kernel'" in repr(model[0].spatial_mix)
    assert set_wkv_mode(model, method="chunked") == 2
    assert [(m.wkv_mode, m.wkv_method) for m in model.modules() if isinstance(m, SpatialMix)] == [
        ("kernel", "chunked")] * 2
    with pytest.raises(ValueError, match="wkv_mode"):
        set_wkv_mode(model, "fast")
    with pytest.raises(ValueError, match="wkv_method"):
        set_wkv_mode(model, method="triton")


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="wkv_mode"):
        SpatialMix(4, wkv_mode="official")
    with pytest.raises(ValueError, match="wkv_method"):
        SpatialMix(4, wkv_method="cuda")
    with pytest.raises(ValueError, match="hidden_rate"):
        BiRWKVBlock(4, hidden_rate=0)
    with pytest.raises(ValueError, match="dim"):
        BiRWKVBlock(0)
