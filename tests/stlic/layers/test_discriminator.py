"""LatentConditionedDiscriminator: shapes, spectral norm off by default and on request, float64 reference forward pass."""
import pytest
import torch
import torch.nn.functional as F

from stlic.layers.discriminator import CONDITION_CHANNELS, LatentConditionedDiscriminator


@pytest.mark.parametrize("n_layers,height,width", [(4, 64, 48), (3, 32, 80), (2, 16, 16)])
def test_logits_map_shape(n_layers, height, width):
    d = LatentConditionedDiscriminator(latent_channels=6, base_channels=4, n_layers=n_layers)
    logits = d(torch.rand(2, 3, height, width), torch.randn(2, 6, height // 16, width // 16))
    scale = 2 ** (n_layers - 1)
    assert logits.shape == (2, 1, height // scale, width // scale)


def test_no_spectral_norm_and_no_normalisation_layers():
    d = LatentConditionedDiscriminator(latent_channels=6)
    for module in d.modules():
        assert not hasattr(module, "parametrizations"), f"{module} is parametrised"
        assert not hasattr(module, "weight_orig"), f"{module} carries spectral norm"
        assert not isinstance(module, (torch.nn.BatchNorm2d, torch.nn.InstanceNorm2d, torch.nn.GroupNorm))
    assert not any(name.endswith(("_u", "_v")) for name, _ in d.named_buffers())
    assert d.latent_projection.out_channels == CONDITION_CHANNELS == 12


def _reference_forward(d, image, latent):
    """HiFiC recipe written out with F.conv2d and repeat_interleave (independent of the module)."""
    convs = [m for m in d.patch_gan if isinstance(m, torch.nn.Conv2d)]
    p = d.latent_projection
    c = F.leaky_relu(F.conv2d(latent, p.weight, p.bias, padding=1), 0.2)
    c = c.repeat_interleave(16, dim=2).repeat_interleave(16, dim=3)
    h = torch.cat([2 * image - 1, c], 1)
    for conv in convs[:-2]:
        h = F.leaky_relu(F.conv2d(h, conv.weight, conv.bias, stride=2, padding=1), 0.2)
    h = F.leaky_relu(F.conv2d(F.pad(h, (1, 2, 1, 2)), convs[-2].weight, convs[-2].bias), 0.2)
    return F.conv2d(h, convs[-1].weight, convs[-1].bias)


def test_matches_float64_reference():
    torch.manual_seed(0)
    d = LatentConditionedDiscriminator(latent_channels=5, base_channels=4, n_layers=4).double()
    image, latent = torch.rand(2, 3, 48, 32, dtype=torch.float64), torch.randn(2, 5, 3, 2, dtype=torch.float64)
    torch.testing.assert_close(d(image, latent), _reference_forward(d, image, latent))


def test_condition_changes_the_logits_only_near_the_changed_latent_block():
    torch.manual_seed(0)
    d = LatentConditionedDiscriminator(latent_channels=4, base_channels=4, n_layers=2).double()
    image, latent = torch.rand(1, 3, 128, 128, dtype=torch.float64), torch.randn(1, 4, 8, 8, dtype=torch.float64)
    changed = latent.clone()
    changed[..., 0, 0] += 5.0  # the 3x3 projection spreads it to latent blocks (0..1, 0..1)
    diff = (d(image, changed) - d(image, latent)).abs()[0, 0]  # logits at H/2
    assert diff[:20, :20].sum() > 0
    assert diff[40:, :].abs().max() == 0 and diff[:, 40:].abs().max() == 0


@pytest.mark.parametrize(
    "image_shape,latent_shape,message",
    [
        ((1, 3, 64, 64), (1, 6, 3, 4), "does not match"),
        ((2, 3, 64, 64), (1, 6, 4, 4), "does not match"),
        ((1, 1, 64, 64), (1, 6, 4, 4), "image must be"),
        ((1, 3, 64, 64), (1, 7, 4, 4), "latent must be"),
    ],
)
def test_mismatched_inputs_are_rejected(image_shape, latent_shape, message):
    d = LatentConditionedDiscriminator(latent_channels=6, base_channels=4, n_layers=2)
    with pytest.raises(ValueError, match=message):
        d(torch.rand(image_shape), torch.randn(latent_shape))


def test_spectral_norm_brings_every_convolution_to_unit_spectral_norm():
    """After power iterations (one per training forward) sigma_max(W.flatten(1)) = 1 for each conv."""
    torch.manual_seed(0)
    d = LatentConditionedDiscriminator(latent_channels=8, base_channels=4, n_layers=3, spectral_norm=True)
    image, latent = torch.rand(1, 3, 32, 32), torch.randn(1, 8, 2, 2)
    for _ in range(50):
        d(image, latent)
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 5  # latent projection, 3 PatchGAN convs, the 1x1 head
    for conv in convs:
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        assert sigma.item() == pytest.approx(1.0, abs=1e-3)
    plain = LatentConditionedDiscriminator(latent_channels=8, base_channels=4, n_layers=3)
    assert set(d.state_dict()) > {k.replace(".weight", ".parametrizations.weight.original") for k in plain.state_dict()
                                  if k.endswith("weight")}
