"""Shared fixtures of the model tests: a tiny ST-LIC model and real photo crops."""
from __future__ import annotations

from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from stlic.models import STLIC, ModelConfig
from stlic.paths import default_train_images, shared_data


def load_photo() -> tuple[np.ndarray, str]:
    """A Kodak image from ../shared/data when present, else scikit-image's astronaut."""
    kodak = shared_data("kodak")
    path = kodak / "kodim23.png" if kodak is not None and (kodak / "kodim23.png").is_file() else None
    if path is None:
        candidates = [p for p in default_train_images() if p.name == "astronaut.png"]
        if not candidates:
            pytest.skip("no photograph available: ../shared/data/kodak absent and skimage has no astronaut.png")
        path = candidates[0]
    return np.asarray(Image.open(path).convert("RGB")), path.name


@pytest.fixture(scope="session")
def photo_crop() -> Callable[..., torch.Tensor]:
    """``photo_crop(height, width)``: a (1, 3, height, width) crop of the photo in [0, 1]."""
    image, _ = load_photo()

    def crop(height: int, width: int, top: int = 200, left: int = 300) -> torch.Tensor:
        top, left = min(top, image.shape[0] - height), min(left, image.shape[1] - width)
        pixels = image[top:top + height, left:left + width].copy()
        return torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255.0

    return crop


def _fixed_model(config: ModelConfig | str) -> STLIC:
    torch.manual_seed(0)
    model = STLIC(config).eval()
    with torch.no_grad():
        model.main.g_a[-1].weight.mul_(20.0)
    model.update()
    return model


@pytest.fixture(scope="session")
def tiny_model() -> STLIC:
    """A fixed tiny model in eval mode with CDF tables built (tests must not modify it).

    The last g_a layer is scaled up so that y spans several quantisation bins (at random
    initialisation it would round to zero almost everywhere).
    """
    return _fixed_model("tiny")


@pytest.fixture(scope="session")
def lean_model() -> STLIC:
    """``tiny_model`` without the Bi-RWKV blocks of the transforms (same code, 4x cheaper):
    for tests of the coding logic that do not need the full transforms."""
    return _fixed_model(ModelConfig.from_dict({"transform_depths": (0, 0, 0), "hyper_depth": 0}, base="tiny"))
