"""Wasserstein distortion against a float64 loop-by-loop reference and its limiting cases."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stlic.losses import WassersteinDistortion, local_statistics, wasserstein_distortion

TAPS = (0.25, 0.5, 0.25)


def _np_lowpass(a, stride=1, padding="zeros"):
    """3x3 [1/4,1/2,1/4] outer-product filter with XLA "SAME" geometry, explicit loops.

    Output o reads inputs o * stride - before + (0, 1, 2), before = total // 2 with
    total = (ceil(n / stride) - 1) * stride + 3 - n (the reference's jax.lax.conv "same");
    outside the map: 0 ("zeros") or the nearest border value ("replicate").
    """
    def taps(n):
        out = -(-n // stride)
        before = max((out - 1) * stride + 3 - n, 0) // 2
        for o in range(out):
            yield o, [(o * stride - before + d, TAPS[d]) for d in range(3)]

    height, width = a.shape
    result = np.zeros((-(-height // stride), -(-width // stride)))
    for o, rows in taps(height):
        for q, cols in taps(width):
            for i, wi in rows:
                for j, wj in cols:
                    if padding == "zeros" and not (0 <= i < height and 0 <= j < width):
                        continue
                    result[o, q] += wi * wj * a[min(max(i, 0), height - 1), min(max(j, 0), width - 1)]
    return result


def _np_wd(fa, fb, log2_sigma, levels, padding="zeros"):
    """WD of (C, H, W) float64 maps with an (H, W) log2-sigma map, straight from the formula."""
    weight = lambda level, sigma: np.maximum(0.0, 1 - np.abs(sigma - level))  # noqa: E731
    lowpass = lambda a, stride=1: _np_lowpass(a, stride, padding)  # noqa: E731
    total = (weight(0, log2_sigma) * (fa - fb) ** 2).mean()
    cur = [fa.copy(), fb.copy()]
    sq = [fa**2, fb**2]
    sigma = log2_sigma
    for level in range(1, levels + 1):
        if level >= 2:
            sigma = lowpass(sigma, stride=2)
        means, stds = [], []
        for k in range(2):
            m = np.stack([lowpass(c) for c in cur[k]])
            p = np.stack([lowpass(c) for c in sq[k]])
            means.append(m)
            stds.append(np.sqrt(np.maximum(p - m**2, 0)))
            cur[k], sq[k] = m[:, ::2, ::2], p[:, ::2, ::2]
        distance = (means[0] - means[1]) ** 2 + (stds[0] - stds[1]) ** 2
        total += (weight(level, sigma)[None] * distance).mean()
    return total


@pytest.mark.parametrize("padding", ["zeros", "replicate"])
@pytest.mark.parametrize("sigma_kind", ["map", "scalar"])
@pytest.mark.parametrize("size", [(7, 5), (8, 6)])  # odd and even maps: the stride-2 geometry differs
def test_matches_float64_brute_force(sigma_kind, padding, size):
    rng = np.random.default_rng(0)
    fa, fb = rng.normal(size=(2, *size)), rng.normal(size=(2, *size)) * 1.5 + 0.3
    sigma = rng.uniform(0, 3, size=size) if sigma_kind == "map" else np.full(size, 1.5)
    expected = _np_wd(fa, fb, sigma, levels=3, padding=padding)
    torch_sigma = torch.from_numpy(sigma)[None, None] if sigma_kind == "map" else 1.5
    got = wasserstein_distortion(torch.from_numpy(fa)[None], torch.from_numpy(fb)[None], torch_sigma, num_levels=3,
                                 padding=padding)
    assert got.shape == (1,)
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_local_statistics_match_explicit_window():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(1, 1, 6, 6))
    stats = local_statistics(torch.from_numpy(f), num_levels=2)
    m1 = _np_lowpass(f[0, 0])
    s1 = np.sqrt(np.maximum(_np_lowpass(f[0, 0] ** 2) - m1**2, 0))
    np.testing.assert_allclose(stats.means[0][0, 0].numpy(), m1, rtol=1e-12)
    np.testing.assert_allclose(stats.stds[0][0, 0].numpy(), s1, rtol=1e-12)
    assert stats.means[1].shape[-2:] == (3, 3)  # level 2 lives at half resolution
    np.testing.assert_allclose(stats.means[1][0, 0].numpy(), _np_lowpass(m1[::2, ::2]), rtol=1e-12)


def test_log2_sigma_zero_is_feature_mse():
    g = torch.Generator().manual_seed(2)
    fa, fb = torch.randn(3, 4, 9, 8, generator=g), torch.randn(3, 4, 9, 8, generator=g)
    expected = (fa - fb).square().mean(dim=(1, 2, 3))
    torch.testing.assert_close(wasserstein_distortion(fa, fb, 0.0), expected)
    torch.testing.assert_close(wasserstein_distortion(fa, fb, torch.zeros(1, 1, 9, 8)), expected)


def test_large_sigma_is_texture_invariant():
    g = torch.Generator().manual_seed(3)
    fa, fb = torch.randn(1, 4, 64, 64, generator=g), torch.randn(1, 4, 64, 64, generator=g)
    mse = wasserstein_distortion(fa, fb, 0.0).item()  # ~2 for i.i.d. unit noise
    same_statistics = wasserstein_distortion(fa, fb, 5.0).item()
    other_statistics = wasserstein_distortion(fa, 3 * fb + 1, 5.0).item()
    assert same_statistics < 0.05 * mse
    assert other_statistics > 20 * same_statistics


def test_sigma_map_localises_texture_invariance():
    g = torch.Generator().manual_seed(6)
    fa = torch.randn(1, 4, 64, 64, generator=g)
    fb = fa.clone()
    fb[..., 32:] = torch.randn(1, 4, 64, 32, generator=g)  # right half: new noise, same statistics
    pixelwise_right = torch.zeros(1, 1, 64, 64)
    texture_right = pixelwise_right.clone()
    texture_right[..., 32:] = 5.0
    mse = wasserstein_distortion(fa, fb, pixelwise_right).item()
    assert mse == pytest.approx((fa - fb).square().mean().item(), rel=1e-6)
    assert wasserstein_distortion(fa, fb, texture_right).item() < 0.1 * mse


@pytest.fixture(scope="module")
def wd(tmp_path_factory):
    import os

    saved = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(tmp_path_factory.mktemp("empty_torch_home"))
    try:
        return WassersteinDistortion(log2_sigma=2.0)  # offline: ST-LPIPS VGG trunk
    finally:
        if saved is None:
            del os.environ["TORCH_HOME"]
        else:
            os.environ["TORCH_HOME"] = saved


def _independent_features(wd, x):
    image = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    scales = [x, F.avg_pool2d(x, 2), F.avg_pool2d(F.avg_pool2d(x, 2), 2)]
    return [image] + [f for s in scales for f in wd.backbone(s)]


def test_image_level_sigma_zero_is_sum_of_feature_mse(wd):
    assert wd.backbone_name == "stlpips-vgg16-antialiased" and wd.min_image_size == 72
    g = torch.Generator().manual_seed(4)
    x, y = torch.rand(2, 3, 72, 72, generator=g), torch.rand(2, 3, 72, 72, generator=g)
    with torch.no_grad():
        features_x, features_y = _independent_features(wd, x), _independent_features(wd, y)
        assert len(features_x) == 1 + 5 * 3
        # sigma 0: no tap of an extra scale keeps a positive sigma, so only the full scale counts
        expected = sum((a - b).square().mean() for a, b in zip(features_x[:6], features_y[:6]))
        torch.testing.assert_close(wd(x, y, log2_sigma=0.0), expected, rtol=1e-5, atol=0)


def test_extra_scales_stop_at_the_last_tap_with_positive_sigma(wd):
    """At scale s a tap of stride 2^j keeps log2 sigma - s - j; taps left at 0 are not computed."""
    assert wd.scale_depths(5.0) == [5, 4, 3]
    assert wd.scale_depths(2.0) == [5, 1, 0]
    assert wd.scale_depths(torch.tensor([[[[0.5, 2.5]]]])) == [5, 2, 1]
    g = torch.Generator().manual_seed(7)
    x, y = torch.rand(1, 3, 72, 72, generator=g), torch.rand(1, 3, 72, 72, generator=g)
    with torch.no_grad():
        features_x, features_y = _independent_features(wd, x), _independent_features(wd, y)
        kept = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13]  # image, 5 full, 4 at /2, 3 at /4
        expected = 0
        for i in kept:
            log2_ratio = np.log2(72 / np.array(features_x[i].shape[-2:])).mean()  # feature stride
            expected = expected + wasserstein_distortion(features_x[i], features_y[i], max(0.0, 5.0 - log2_ratio))
        torch.testing.assert_close(wd.per_image(x, y, 5.0), expected, rtol=1e-5, atol=0)


def test_image_level_noise_textures_score_below_mse(wd):
    g = torch.Generator().manual_seed(5)
    x, y = torch.rand(1, 3, 72, 72, generator=g), torch.rand(1, 3, 72, 72, generator=g)
    with torch.no_grad():
        # deep VGG maps are coarse (sigma shrinks by their stride), so the gain is partial there
        assert wd(x, y, log2_sigma=5.0) < 0.75 * wd(x, y, log2_sigma=0.0)
        constant_map = torch.full((1, 1, 72, 72), 3.0)
        torch.testing.assert_close(wd(x, y, constant_map), wd(x, y, 3.0))
        coarse_map = torch.full((1, 1, 9, 9), 3.0)  # sigma is in image pixels whatever the map size
        torch.testing.assert_close(wd(x, y, coarse_map), wd(x, y, 3.0))


def test_gradients_finite_at_zero_variance_and_identical_inputs(wd):
    one_scale = WassersteinDistortion(log2_sigma=3.0, num_scales=1, backbone=wd.backbone)
    x = torch.full((1, 3, 32, 32), 0.5, requires_grad=True)
    one_scale(x, torch.full((1, 3, 32, 32), 0.3)).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    y = torch.rand(1, 3, 32, 32)
    z = y.clone().requires_grad_(True)
    loss = one_scale(z, y)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(z.grad).all()


def test_bad_inputs_are_named(wd):
    x = torch.rand(1, 3, 72, 72)
    with pytest.raises(ValueError, match="log2_sigma"):
        wd(x, x, log2_sigma=6.0)
    with pytest.raises(ValueError, match="log2_sigma"):
        wd(x, x, log2_sigma=-1.0)
    with pytest.raises(ValueError, match="log2_sigma map"):
        wd(x, x, log2_sigma=torch.ones(1, 3, 72, 72))
    with pytest.raises(ValueError, match="num_scales"):
        wd(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64), log2_sigma=5.0)  # 3 scales: >= 72 px
    with pytest.raises(ValueError, match="equal shape"):
        wd(x, torch.rand(1, 3, 72, 96))
    with pytest.raises(ValueError, match="equal shape"):
        wasserstein_distortion(torch.rand(1, 2, 4, 4), torch.rand(1, 2, 4, 5), 1.0)


def test_default_sigma_is_texture_tolerant_where_sigma_2_was_feature_mse(wd):
    """A photo shifted by 4 px (same content and texture, every pixel moved): at the default
    log2 sigma WD forgives most of the feature MSE; at the old default 2 it was the MSE."""
    import skimage.data

    one_scale = WassersteinDistortion(num_scales=1, backbone=wd.backbone)
    assert one_scale.log2_sigma == 5.0 and one_scale.padding == "zeros"
    photo = torch.from_numpy(skimage.data.astronaut()[:128, 128:256] / 255.0).permute(2, 0, 1)[None].float()
    shifted = torch.roll(photo, 4, dims=-1)
    with torch.no_grad():
        feature_mse = one_scale(photo, shifted, 0.0).item()
        assert one_scale(photo, shifted, 2.0).item() > 0.95 * feature_mse
        assert one_scale(photo, shifted).item() < 0.5 * feature_mse


def _torch_wd_all_levels(fa, fb, log2_sigma, levels, padding="zeros"):
    """Float64 autograd transcription of the formula: shifted-sum filters, every level computed
    and weighted (no level skipped), the sigma map carried by the reference's stride-2 lowpass."""
    def lowpass(a, stride=1):
        def same(n):
            total = max((-(-n // stride) - 1) * stride + 3 - n, 0)
            return total // 2, total - total // 2
        (top, bottom), (left, right) = same(a.shape[-2]), same(a.shape[-1])
        a = F.pad(a, (left, right, top, bottom), mode="constant" if padding == "zeros" else "replicate")
        a = 0.25 * a[..., :, :-2] + 0.5 * a[..., :, 1:-1] + 0.25 * a[..., :, 2:]
        a = 0.25 * a[..., :-2, :] + 0.5 * a[..., 1:-1, :] + 0.25 * a[..., 2:, :]
        return a[..., ::stride, ::stride]

    sigma = torch.full((1, 1, *fa.shape[-2:]), float(log2_sigma), dtype=torch.float64)
    weight = lambda level, s: F.relu(1 - (s - level).abs())  # noqa: E731
    total = (weight(0, sigma) * (fa - fb) ** 2).mean(dim=(1, 2, 3))
    moments = [(fa, fa**2), (fb, fb**2)]
    for level in range(1, levels + 1):
        if level >= 2:
            sigma = lowpass(sigma, stride=2)
        filtered = [(lowpass(f), lowpass(s)) for f, s in moments]
        stats = [(m, (p - m**2).clamp_min(0).sqrt()) for m, p in filtered]
        moments = [(m[..., ::2, ::2], p[..., ::2, ::2]) for m, p in filtered]
        distance = (stats[0][0] - stats[1][0]) ** 2 + (stats[0][1] - stats[1][1]) ** 2
        total = total + (weight(level, sigma) * distance).mean(dim=(1, 2, 3))
    return total


@pytest.mark.parametrize("padding", ["zeros", "replicate"])
@pytest.mark.parametrize("sigma", [5.0, 3.0, 2.0, 2.5, 1.0, 0.5])
@pytest.mark.parametrize("size", [(24, 20), (23, 17)])
def test_constant_sigma_skips_only_zero_weight_levels(sigma, padding, size):
    """The fast path (levels whose weight is zero everywhere skipped, the decimated filter in their
    place) gives the value and the gradient of the formula with every level computed."""
    g = torch.Generator().manual_seed(11)
    fa = torch.randn(2, 3, *size, generator=g, dtype=torch.float64, requires_grad=True)
    fb = torch.randn(2, 3, *size, generator=g, dtype=torch.float64) * 1.3 + 0.2
    expected = _torch_wd_all_levels(fa, fb, sigma, levels=5, padding=padding)
    (grad_expected,) = torch.autograd.grad(expected.sum(), fa)
    got = wasserstein_distortion(fa, fb, sigma, num_levels=5, padding=padding)
    (grad_got,) = torch.autograd.grad(got.sum(), fa)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(grad_got, grad_expected, rtol=1e-10, atol=1e-15)
    if padding == "zeros":  # the same sigma as a map takes the general path: every level
        as_map = torch.full((1, 1, *size), sigma, dtype=torch.float64)
        torch.testing.assert_close(wasserstein_distortion(fa, fb, as_map, num_levels=5), expected, rtol=1e-12, atol=0)


def test_decimated_lowpass_is_filter_then_every_other_sample():
    from stlic.losses.wasserstein import lowpass, lowpass_decimated

    g = torch.Generator().manual_seed(12)
    for size in ((9, 8), (8, 9), (16, 16)):
        x = torch.randn(2, 3, *size, generator=g, dtype=torch.float64)
        for padding in ("zeros", "replicate"):
            torch.testing.assert_close(lowpass_decimated(x, padding), lowpass(x, padding=padding)[..., ::2, ::2],
                                       rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(lowpass(x[0, 0], stride=2).numpy(), _np_lowpass(x[0, 0].numpy(), stride=2), rtol=1e-12)


def test_bf16_autocast_keeps_the_loss_within_one_percent_of_fp32(wd):
    """Real photo crops: the VGG trunk in bf16, the statistics in float32 (precision.upcast)."""
    import skimage.data

    loss = WassersteinDistortion(num_scales=1, backbone=wd.backbone)
    photos = [skimage.data.astronaut()[:128, :128], skimage.data.coffee()[100:228, 200:328],
              skimage.data.chelsea()[50:178, 100:228]]
    x = torch.stack([torch.from_numpy(p / 255.0).permute(2, 0, 1).float() for p in photos])
    y = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(13))).clamp(0, 1)
    with torch.no_grad():
        fp32 = loss.per_image(x, y)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = loss.per_image(x, y)
    assert bf16.dtype == torch.float32
    torch.testing.assert_close(bf16, fp32, rtol=0.01, atol=0)
    assert not torch.equal(bf16, fp32)  # the trunk did run in bf16
