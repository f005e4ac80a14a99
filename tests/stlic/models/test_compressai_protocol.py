"""CompressAI's protocol: its own evaluation functions run on ST-LIC, outputs read as mappings,
``update(scale_table=None, force=False)``."""
from __future__ import annotations

import math

import pytest
import torch

from compressai.utils.eval_model.__main__ import inference, inference_entropy_estimation


def _psnr_8bit(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of two [0, 1] images after 8-bit rounding, in float64."""
    a, b = ((t.double() * 255).clamp(0, 255).round() for t in (a, b))
    return 10 * math.log10(255**2 / (a - b).square().mean().item())


def test_compressai_eval_functions_run_on_a_tiny_model(tiny_model, photo_crop):
    x = photo_crop(192, 192)[0]  # MS-SSIM needs more than 160 pixels a side
    coded = inference(tiny_model, x)
    estimated = inference_entropy_estimation(tiny_model, x)
    code = tiny_model.compress(x[None])
    assert coded["bpp"] == pytest.approx(8 * code.num_bytes / 192**2)
    assert coded["psnr-rgb"] == pytest.approx(_psnr_8bit(tiny_model.reconstruct(x[None]).x_hat, x), abs=1e-4)
    with torch.no_grad():
        out = tiny_model(x[None])
    assert estimated["psnr-rgb"] == pytest.approx(_psnr_8bit(out.x_hat, x), abs=1e-4)
    estimate = sum(-v.log2().sum().item() for v in out.likelihoods.values()) / 192**2
    assert estimated["bpp"] == pytest.approx(estimate, rel=1e-4)


def test_outputs_read_as_mappings(tiny_model, photo_crop):
    x = photo_crop(64, 64)
    out = tiny_model(x)
    assert out["x_hat"] is out.x_hat and set(out["likelihoods"]) == {"y", "z"}
    code = tiny_model.compress(x)
    assert code["strings"] is code.strings and code["shape"] == code.shape
    decoded = tiny_model.decompress(code["strings"], code["shape"])
    decoded["x_hat"] = decoded["x_hat"][..., :32, :32]  # CompressAI's eval_model assigns to it
    assert decoded.x_hat.shape[-2:] == (32, 32)
    assert list(decoded) == ["x_hat", "x_refined"] and dict(decoded)["x_refined"] is decoded.x_refined
    with pytest.raises(KeyError, match="no field 'bpp'"):
        decoded["bpp"] = 1.0


def test_update_takes_compressai_arguments(lean_model, photo_crop):
    import copy

    model = copy.deepcopy(lean_model)
    assert model.update() is False  # tables exist: nothing rebuilt without force
    table = torch.exp(torch.linspace(math.log(0.11), math.log(64.0), 32))
    assert model.update(scale_table=table, force=True) is True
    assert model.main.entropy_model.gaussian_conditional.quantized_cdf.shape[0] == 32
    x = photo_crop(64, 64)
    code = model.compress(x, 1.0)
    assert torch.equal(model.decompress(code.strings, code.shape, 1.0, (64, 64)).x_hat,
                       model.reconstruct(x, 1.0).x_hat)
    with pytest.raises(ValueError, match="strictly increasing"):
        model.update(scale_table=table.flip(0), force=True)
