"""STLIC: registry, main / refiner split, training forward, rate-level API, state_dict I/O."""
from __future__ import annotations

import io

import pytest
import torch

from stlic.layers.unet import UNetRefiner
from stlic.models import LALIC, PRESETS, STLIC, ModelConfig, STLICOutput
from stlic.registry import get_model


def test_registry_builds_the_model_with_main_and_refiner():
    model = get_model("stlic", PRESETS["tiny"])
    assert isinstance(model, STLIC)
    assert isinstance(model.main, LALIC) and isinstance(model.refiner, UNetRefiner)
    main_params = {id(p) for p in model.main.parameters()}
    refiner_params = {id(p) for p in model.refiner.parameters()}
    assert main_params.isdisjoint(refiner_params)
    assert len(main_params) + len(refiner_params) == len(list(model.parameters()))
    assert model.rate_lambdas == PRESETS["tiny"].rate_lambdas
    assert model.level_for_lambda(model.rate_lambdas[2]) == pytest.approx(2.0)


def test_config_argument_validation():
    with pytest.raises(TypeError, match="ModelConfig or a preset name"):
        STLIC(42)
    with pytest.raises(ValueError, match="unknown model preset"):
        STLIC("enormous")


def test_forward_routes_losses_to_both_groups(photo_crop):
    torch.manual_seed(0)
    model = STLIC(ModelConfig.from_dict({"refiner_depth": 2}, base="tiny"))
    x = photo_crop(64, 64)
    out = model(x, level=0.5)
    assert isinstance(out, STLICOutput)
    assert torch.equal(out.x_refined, out.x_hat)  # refiner starts as the identity
    assert set(out.likelihoods) == {"y", "z"}
    (out.x_refined - x).abs().mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.main.parameters())
    assert model.refiner.head.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="multiples of 64"):
        model(torch.rand(1, 3, 64, 96))


def test_state_dict_round_trip_after_update(lean_model, photo_crop):
    """A checkpoint saved after update() loads into a fresh model and decodes identically."""
    buffer = io.BytesIO()
    torch.save(lean_model.state_dict(), buffer)
    buffer.seek(0)
    fresh = STLIC(lean_model.config).eval()
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    x = photo_crop(64, 64)
    code = lean_model.compress(x, 1.0)
    decoded = fresh.decompress(code.strings, code.shape, code.level, code.original_size)
    assert torch.equal(decoded.x_hat, lean_model.reconstruct(x, 1.0).x_hat)
