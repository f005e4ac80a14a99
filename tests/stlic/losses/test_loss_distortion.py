"""L1 / MSE on [0, 1] images against NumPy float64."""
import numpy as np
import pytest
import torch

from stlic.losses import L1Loss, MSELoss


def _pair(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, 8, 5, generator=g, dtype=torch.float64), torch.rand(2, 3, 8, 5, generator=g, dtype=torch.float64)


def test_l1_and_mse_match_numpy():
    x_hat, x = _pair()
    a, b = x_hat.numpy(), x.numpy()
    assert L1Loss()(x_hat, x).item() == pytest.approx(np.abs(a - b).mean(), rel=1e-12)
    assert MSELoss()(x_hat, x).item() == pytest.approx(((a - b) ** 2).mean(), rel=1e-12)


def test_data_range_255_matches_uint8_scale():
    x_hat, x = _pair(1)
    a, b = x_hat.numpy() * 255, x.numpy() * 255
    assert MSELoss(data_range=255)(x_hat, x).item() == pytest.approx(((a - b) ** 2).mean(), rel=1e-12)
    assert L1Loss(data_range=255)(x_hat, x).item() == pytest.approx(np.abs(a - b).mean(), rel=1e-12)


def test_mse_gradient_is_two_diff_over_count():
    x_hat, x = _pair(2)
    x_hat.requires_grad_(True)
    MSELoss()(x_hat, x).backward()
    np.testing.assert_allclose(x_hat.grad.numpy(), 2 * (x_hat.detach() - x).numpy() / x.numel())


@pytest.mark.parametrize("loss", [L1Loss(), MSELoss()])
def test_shape_mismatch_is_an_error_not_a_broadcast(loss):
    with pytest.raises(ValueError, match="shapes differ"):
        loss(torch.rand(2, 3, 4, 4), torch.rand(1, 3, 4, 4))


def test_nonpositive_data_range_rejected():
    with pytest.raises(ValueError, match="data_range"):
        MSELoss(data_range=0)
