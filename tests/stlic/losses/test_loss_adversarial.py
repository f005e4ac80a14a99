"""Non-saturating GAN losses and AdversarialLoss (owns D and its optimizer)."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from stlic.layers.discriminator import LatentConditionedDiscriminator
from stlic.losses import (AdversarialLoss, DiscriminatorStep, discriminator_health, discriminator_loss, generator_loss,
                          r1_penalty)


def _np_log_sigmoid(l):
    return -np.log1p(np.exp(-l))  # log(1 / (1 + e^-l)) in float64


def test_losses_match_float64_hand_computation():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(3, 1, 4, 4)) * 3, rng.normal(size=(3, 1, 4, 4)) * 3
    expected_d = 0.5 * np.mean(-_np_log_sigmoid(real)) + 0.5 * np.mean(-np.log(1 - np.exp(_np_log_sigmoid(fake))))
    expected_g = np.mean(-_np_log_sigmoid(fake))
    got_d = discriminator_loss(torch.from_numpy(real), torch.from_numpy(fake))
    assert got_d.item() == pytest.approx(expected_d, rel=1e-12)
    assert generator_loss(torch.from_numpy(fake)).item() == pytest.approx(expected_g, rel=1e-12)


def test_losses_stay_finite_for_saturated_logits():
    logits = torch.tensor([-200.0, 200.0])
    assert torch.isfinite(discriminator_loss(logits, logits)) and torch.isfinite(generator_loss(logits))
    assert generator_loss(torch.tensor([-200.0])).item() == pytest.approx(200.0)
    assert discriminator_loss(torch.zeros(1), torch.zeros(1)).item() == pytest.approx(math.log(2))


class _PixelDiscriminator(nn.Module):
    """1x1-conv logits on the image; the latent enters as a per-image bias."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)
        self.latent_weight = nn.Parameter(torch.zeros(()))

    def forward(self, image, latent):
        return self.conv(image) + self.latent_weight * latent.mean(dim=(1, 2, 3)).view(-1, 1, 1, 1)


def _toy_batch(g):
    real = 0.75 + 0.05 * torch.randn(4, 3, 8, 8, generator=g)
    fake = 0.25 + 0.05 * torch.randn(4, 3, 8, 8, generator=g)
    return fake, real, torch.randn(4, 2, 1, 1, generator=g)


def test_train_adv_lowers_discriminator_loss_on_separable_data():
    torch.manual_seed(0)
    adversarial = AdversarialLoss(_PixelDiscriminator(), lambda p: torch.optim.Adam(p, lr=0.1))
    g = torch.Generator().manual_seed(1)
    steps = [adversarial.train_adv(*_toy_batch(g)) for _ in range(100)]
    assert isinstance(steps[0], DiscriminatorStep)
    assert steps[-1].loss < 0.25 * steps[0].loss
    assert steps[-1].d_real > 0.8 and steps[-1].d_fake < 0.2
    assert not steps[-1].loss.requires_grad


def test_train_adv_detaches_fake_and_latent():
    adversarial = AdversarialLoss(_PixelDiscriminator(), lambda p: torch.optim.SGD(p, lr=0.1))
    generator_param = nn.Parameter(torch.tensor(0.3))
    fake, real, latent = _toy_batch(torch.Generator().manual_seed(2))
    adversarial.train_adv(fake * generator_param, real, latent * generator_param)
    assert generator_param.grad is None


def test_generator_loss_leaves_discriminator_grads_and_flags_untouched():
    discriminator = _PixelDiscriminator()
    discriminator.latent_weight.requires_grad_(False)  # a frozen flag must survive the call
    adversarial = AdversarialLoss(discriminator, torch.optim.SGD([discriminator.conv.weight, discriminator.conv.bias], lr=0.1))
    fake, _, latent = _toy_batch(torch.Generator().manual_seed(3))
    fake.requires_grad_(True)
    adversarial.generator_loss(fake, latent).backward()
    assert all(p.grad is None for p in discriminator.parameters())
    assert fake.grad is not None and fake.grad.abs().sum() > 0

    adversarial.train_adv(*_toy_batch(torch.Generator().manual_seed(4)))  # leaves D grads set
    before = [p.grad.clone() for p in discriminator.conv.parameters()]
    adversarial(fake, latent).backward()
    for p, grad in zip(discriminator.conv.parameters(), before):
        torch.testing.assert_close(p.grad, grad, rtol=0, atol=0)
    assert discriminator.conv.weight.requires_grad and not discriminator.latent_weight.requires_grad


def test_generator_loss_equals_formula_on_discriminator_logits():
    discriminator = _PixelDiscriminator()
    adversarial = AdversarialLoss(discriminator, lambda p: torch.optim.SGD(p, lr=0.1))
    fake, _, latent = _toy_batch(torch.Generator().manual_seed(5))
    with torch.no_grad():
        logits = discriminator(fake, latent).double().numpy()
    assert adversarial.generator_loss(fake, latent).item() == pytest.approx(np.mean(-_np_log_sigmoid(logits)), rel=1e-6)


def test_state_dict_resumes_exactly_including_optimizer(tmp_path):
    def make():
        torch.manual_seed(7)
        return AdversarialLoss(_PixelDiscriminator(), lambda p: torch.optim.Adam(p, lr=0.01), grad_clip=1.0)

    g = torch.Generator().manual_seed(8)
    batches = [_toy_batch(g) for _ in range(5)]
    original = make()
    for batch in batches[:3]:
        original.train_adv(*batch)
    torch.save(original.state_dict(), tmp_path / "adv.pt")
    resumed = make()
    resumed.load_state_dict(torch.load(tmp_path / "adv.pt", weights_only=True))
    assert resumed.optimizer.state_dict()["state"][0]["step"] == 3
    for batch in batches[3:]:
        original.train_adv(*batch)
        resumed.train_adv(*batch)
    for a, b in zip(original.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    state = make().state_dict()
    del state["optimizer"]
    with pytest.raises(RuntimeError, match="optimizer"):
        make().load_state_dict(state)


def test_real_latent_conditioned_discriminator_step():
    torch.manual_seed(9)
    discriminator = LatentConditionedDiscriminator(latent_channels=8, base_channels=4, n_layers=3)
    adversarial = AdversarialLoss(discriminator, lambda p: torch.optim.Adam(p, lr=1e-4))
    x, x_hat, y_hat = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32), torch.randn(2, 8, 2, 2)
    step = adversarial.train_adv(x_hat, x, y_hat)
    assert torch.isfinite(step.loss) and 0 < step.d_real < 1 and 0 < step.d_fake < 1
    for p in discriminator.parameters():
        p.grad = None
    x_hat.requires_grad_(True)
    adversarial.generator_loss(x_hat, y_hat).backward()
    assert x_hat.grad.abs().sum() > 0 and all(p.grad is None for p in discriminator.parameters())


def test_bad_construction_is_named():
    discriminator = _PixelDiscriminator()
    with pytest.raises(ValueError, match="not discriminator parameters"):
        AdversarialLoss(discriminator, torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1))
    with pytest.raises(TypeError, match="not an Optimizer"):
        AdversarialLoss(discriminator, lambda p: None)
    with pytest.raises(ValueError, match="grad_clip"):
        AdversarialLoss(discriminator, lambda p: torch.optim.SGD(p, lr=0.1), grad_clip=0)
    adversarial = AdversarialLoss(discriminator, lambda p: torch.optim.SGD(p, lr=0.1))
    with pytest.raises(ValueError, match="differ in shape"):
        adversarial.train_adv(torch.rand(2, 3, 4, 4), torch.rand(1, 3, 4, 4), torch.rand(2, 2, 1, 1))


def test_health_statistics_match_a_patch_by_patch_count():
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(2, 1, 3, 5)), rng.normal(size=(2, 1, 3, 5))
    pairs = list(zip(real.ravel(), fake.ravel()))
    sigmoid = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    right = sum(int(r > 0) + int(f < 0) for r, f in pairs) / (2 * len(pairs))
    gap = sum(abs(sigmoid(r) - sigmoid(f)) for r, f in pairs) / len(pairs)
    health = discriminator_health(torch.from_numpy(real), torch.from_numpy(fake))
    assert health["accuracy"].item() == pytest.approx(right, rel=1e-12)
    assert health["gap"].item() == pytest.approx(gap, rel=1e-12)
    assert health["real_logit"].item() == pytest.approx(real.mean()) and health["fake_logit"].item() == pytest.approx(
        fake.mean())


def test_r1_penalty_of_a_linear_discriminator_is_pixels_times_its_squared_weight():
    """l(x) = w . x + b per pixel: grad_x sum l = w at every pixel, so R1 = H W ||w||^2 per image."""
    torch.manual_seed(0)
    disc = _PixelDiscriminator()
    real = torch.rand(4, 3, 8, 8, requires_grad=True)
    penalty = r1_penalty(disc(real, torch.zeros(4, 2, 1, 1)), real)
    assert penalty.item() == pytest.approx(64 * disc.conv.weight.pow(2).sum().item(), rel=1e-6)


def test_train_adv_with_r1_descends_l_d_plus_half_gamma_r1():
    """SGD (lr 1) step: w' = w - grad L_D - gamma/2 * grad_w (H W ||w||^2) = w - grad L_D - gamma H W w."""
    torch.manual_seed(0)
    fake, real, latent = _toy_batch(torch.Generator().manual_seed(1))
    plain, penalised = _PixelDiscriminator(), _PixelDiscriminator()
    penalised.load_state_dict(plain.state_dict())
    w0 = plain.conv.weight.detach().clone()
    AdversarialLoss(plain, lambda p: torch.optim.SGD(p, lr=1.0)).train_adv(fake, real, latent)
    step = AdversarialLoss(penalised, lambda p: torch.optim.SGD(p, lr=1.0)).train_adv(fake, real, latent, r1_weight=0.5)
    torch.testing.assert_close(penalised.conv.weight, plain.conv.weight - 0.5 * 64 * w0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(penalised.conv.bias, plain.conv.bias)  # the penalty does not depend on b
    assert step.r1.item() == pytest.approx(64 * w0.pow(2).sum().item(), rel=1e-5)
    with pytest.raises(ValueError, match="r1_weight must be >= 0"):
        AdversarialLoss(plain, lambda p: torch.optim.SGD(p, lr=1.0)).train_adv(fake, real, latent, r1_weight=-1.0)
