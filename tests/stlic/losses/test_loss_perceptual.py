"""PerceptualLosses: one shared VGG-16 pass equals LPIPS and WD computed on their own."""
import pytest
import torch

from stlic.losses import LPIPSLoss, PerceptualLosses, WassersteinDistortion


@pytest.fixture(scope="module")
def losses(tmp_path_factory):
    """ST-LPIPS(vgg) and WD (2 scales) on the offline ST-LPIPS trunk: the training default."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("empty_torch_home")))
    try:
        return LPIPSLoss("vgg"), WassersteinDistortion(num_scales=2)
    finally:
        mp.undo()


def _pair(seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    real = torch.rand(2, 3, 64, 64, generator=g, dtype=torch.float64).to(dtype)
    test = (real + 0.2 * torch.rand(2, 3, 64, 64, generator=g, dtype=torch.float64)).clamp(0, 1).to(dtype)
    return test.requires_grad_(True), real


def test_shared_pass_equals_separate_losses_and_their_gradients(losses):
    lpips, wasserstein = losses
    shared = PerceptualLosses(lpips, wasserstein)
    assert shared.shared
    test, real = _pair(0)
    values = shared(test, real)
    (grad_shared,) = torch.autograd.grad(values.lpips + 0.01 * values.wasserstein, test)
    alone_lpips, alone_wd = lpips(test, real), wasserstein(real, test)
    (grad_alone,) = torch.autograd.grad(alone_lpips + 0.01 * alone_wd, test)
    assert torch.equal(values.lpips, alone_lpips)  # same input scaling, same ops: bit for bit
    # WD's trunk input is ST-LPIPS' scaling instead of the equal ImageNet one: float rounding only
    torch.testing.assert_close(values.wasserstein, alone_wd, rtol=1e-5, atol=0)
    torch.testing.assert_close(grad_shared, grad_alone, rtol=1e-4, atol=1e-7)


def test_shared_pass_in_float64_matches_to_the_constants_rounding(losses):
    lpips, wasserstein = (module.double() for module in losses)
    try:
        test, real = _pair(1, torch.float64)
        values = PerceptualLosses(lpips, wasserstein)(test, real)
        torch.testing.assert_close(values.lpips, lpips(test, real), rtol=1e-12, atol=0)
        # the two normalisations' constants are float32 numbers: they agree to ~1e-8
        torch.testing.assert_close(values.wasserstein, wasserstein(real, test), rtol=1e-6, atol=0)
    finally:
        for module in losses:
            module.float()


def test_real_image_runs_without_autograd(losses):
    shared = PerceptualLosses(*losses)
    first_conv = shared.wasserstein.backbone.layers[0]
    recorded = []
    handle = first_conv.register_forward_hook(lambda module, args, output: recorded.append(output.requires_grad))
    try:
        test, real = _pair(2)
        shared(test, real)
    finally:
        handle.remove()
    # real then test at full scale (one pass each, shared by both losses), then the /2 scale
    assert recorded == [False, True, False, True]


def test_different_trunks_are_not_shared_and_give_the_separate_values(losses):
    alex = LPIPSLoss("alex")
    pair = PerceptualLosses(alex, losses[1])
    assert not pair.shared
    test, real = _pair(3)
    values = pair(test, real)
    assert torch.equal(values.lpips, alex(test, real))
    assert torch.equal(values.wasserstein, losses[1](real, test))


def test_bad_pair_is_named(losses):
    shared = PerceptualLosses(*losses)
    with pytest.raises(ValueError, match="equal shape"):
        shared(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 72))


def test_bf16_trunk_keeps_both_losses_within_one_percent_of_fp32(losses):
    """``precision: bf16``: the shared VGG pass in bf16, LPIPS heads and WD statistics in float32."""
    import skimage.data

    photos = [skimage.data.astronaut()[:128, :128], skimage.data.coffee()[100:228, 200:328]]
    real = torch.stack([torch.from_numpy(p / 255.0).permute(2, 0, 1).float() for p in photos])
    test = (real + 0.05 * torch.randn(real.shape, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    shared = PerceptualLosses(*losses)
    assert shared.shared
    with torch.no_grad():
        fp32 = shared(test, real)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = shared(test, real)
    for name in ("lpips", "wasserstein"):
        value, reference = getattr(bf16, name), getattr(fp32, name)
        assert value.dtype == torch.float32
        assert abs(value.item() - reference.item()) <= 0.01 * reference.item(), name
