"""A tiny ST-LIC model that codes a few hundred bytes per image, shared by the codec tests."""
import pytest
import torch

from stlic.models import STLIC

#: the untrained tiny analysis transform outputs a near-zero latent (almost nothing to code);
#: scaling its last conv makes the rate depend on the level, as for a trained model
LATENT_GAIN = 2.0


def make_coding_model(seed: int = 0) -> STLIC:
    torch.manual_seed(seed)
    model = STLIC("tiny").eval()
    with torch.no_grad():
        model.main.g_a[-1].weight.mul_(LATENT_GAIN)
        torch.nn.init.normal_(model.refiner.head.weight, std=0.05)  # refined != decoder output
    model.update(force=True)
    return model


@pytest.fixture(scope="session")
def model_factory():
    """``make_coding_model`` itself, for tests that need a second model."""
    return make_coding_model


@pytest.fixture(scope="session")
def coding_model() -> STLIC:
    return make_coding_model()


@pytest.fixture(scope="session")
def photo() -> torch.Tensor:
    """A 70x90 crop of scikit-image's astronaut (odd size: padded to 128x128 inside)."""
    from skimage import data

    crop = data.astronaut()[100:170, 150:240]
    return torch.from_numpy(crop.copy()).permute(2, 0, 1).float().div(255)
