"""UNetRefiner: identity at initialisation, residual form, shapes, input checks."""
import pytest
import torch

from stlic.layers.unet import UNetRefiner, unet_widths


def test_identity_at_initialisation_for_odd_multiples():
    torch.manual_seed(0)
    refiner = UNetRefiner(base_channels=8, depth=3)
    x = torch.rand(2, 3, 24, 40)  # multiples of 8 that are not powers of two
    assert torch.equal(refiner(x), x)


def test_output_is_input_plus_head_of_unet_features():
    """With a non-zero head the refiner is no longer the identity, and the difference equals the
    head applied to the decoder features (hooked independently)."""
    torch.manual_seed(0)
    refiner = UNetRefiner(base_channels=8, depth=2)
    torch.nn.init.normal_(refiner.head.weight, std=0.1)
    features = {}
    refiner.head.register_forward_hook(lambda module, inputs, output: features.update(f=inputs[0]))
    x = torch.rand(1, 3, 16, 20)
    out = refiner(x)
    reference = torch.nn.functional.conv2d(features["f"], refiner.head.weight, refiner.head.bias)
    assert not torch.equal(out, x)
    torch.testing.assert_close(out - x, reference, rtol=1e-5, atol=1e-6)


def test_zero_head_still_lets_gradient_reach_the_head():
    refiner = UNetRefiner(base_channels=4, depth=2)
    x = torch.rand(1, 3, 8, 8)
    refiner(x).square().sum().backward()
    assert refiner.head.weight.grad is not None and refiner.head.weight.grad.abs().sum() > 0


def test_full_size_parameter_count_matches_documented_widths():
    """Count the parameters from the documented widths by hand (independent of the module)."""
    base, depth = 64, 4
    widths = unet_widths(base, depth)
    assert widths == [64, 128, 256, 256, 256]

    def conv(cin, cout, k):
        return cin * cout * k * k + cout

    expected = conv(3, 64, 3) + conv(64, 64, 3)  # stem
    for i in range(depth):  # strided conv + conv
        expected += conv(widths[i], widths[i + 1], 3) + conv(widths[i + 1], widths[i + 1], 3)
    for i in range(depth):  # 1x1 up-projection + double conv on the concatenation
        expected += conv(widths[i + 1], widths[i], 1) + conv(2 * widths[i], widths[i], 3)
        expected += conv(widths[i], widths[i], 3)
    expected += conv(64, 3, 1)  # head
    actual = sum(p.numel() for p in UNetRefiner(base, depth).parameters())
    assert actual == expected
    assert 7_000_000 < actual < 8_000_000


@pytest.mark.parametrize("shape", [(1, 3, 30, 32), (1, 1, 32, 32), (3, 32, 32)])
def test_bad_input_shape_is_rejected_with_a_clear_error(shape):
    refiner = UNetRefiner(base_channels=4, depth=2)
    with pytest.raises(ValueError, match="UNetRefiner"):
        refiner(torch.rand(*shape))
