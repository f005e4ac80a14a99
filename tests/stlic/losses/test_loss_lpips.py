"""LPIPSLoss against the packages called directly and a hand-written LPIPS formula."""
import copy
import functools
from pathlib import Path

import lpips
import pytest
import torch
import torchvision
from stlpips_pytorch.stlpips import LPIPS as STLPIPS

from stlic.losses import LPIPSLoss, VGG16FeatureExtractor
from stlic.losses.vgg import IMAGENET_MEAN, IMAGENET_STD
from stlic.losses.weights import TORCHVISION_FILES


def _images(seed=0, size=(2, 3, 48, 40)):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*size, generator=g), torch.rand(*size, generator=g)


@functools.lru_cache(maxsize=None)
def _stlpips_reference(net):
    """stlpips-pytorch's own model, built and loaded by the package's code (once per process)."""
    return STLPIPS(net=net, variant="shift_tolerant", verbose=False)


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_stlpips_source_equals_stlpips_pytorch(net):
    loss = LPIPSLoss(net, source="stlpips")
    assert loss.metric_name == f"ST-LPIPS({net})"
    reference = _stlpips_reference(net)
    x, y = _images()
    with torch.no_grad():
        expected = reference(x, y, normalize=True).flatten()
        torch.testing.assert_close(loss.per_image(x, y), expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(loss(x, y), expected.mean(), rtol=1e-5, atol=1e-6)


def test_offline_vgg_backbone_equals_stlpips_trunk(tmp_path, monkeypatch):
    """vgg.py's offline fallback computes exactly the ST-LPIPS VGG trunk's five taps.

    Compared in float64, each path with its own published normalisation constants set in
    float64 (ImageNet mean/std vs ST-LPIPS' shift/scale of 2x - 1: equal algebraically). In
    float32 the two paths differ by conv rounding (9.4e-5 seen in relu5_3), which no fixed
    tolerance bounds on every input.
    """
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    extractor = VGG16FeatureExtractor().double()
    extractor.mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    extractor.std = torch.tensor(IMAGENET_STD, dtype=torch.float64).view(1, 3, 1, 1)
    reference = copy.deepcopy(_stlpips_reference("vgg")).double()
    reference.scaling_layer.shift = torch.tensor([-0.030, -0.088, -0.188], dtype=torch.float64).view(1, 3, 1, 1)
    reference.scaling_layer.scale = torch.tensor([0.458, 0.448, 0.450], dtype=torch.float64).view(1, 3, 1, 1)
    x = torch.rand(2, 3, 40, 36, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        expected = reference.net(reference.scaling_layer(2 * x - 1))
        ours = extractor(x)
    for got, want in zip(ours, expected):
        assert got.dtype == want.dtype == torch.float64
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_identical_images_score_zero_and_gradients_reach_input():
    loss = LPIPSLoss("alex").train()  # train() must not enable the heads' dropout
    x, y = _images(1)
    assert loss(y, y).item() == 0.0
    x.requires_grad_(True)
    value = loss(x, y)
    value.backward()
    assert value.item() > 0 and x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in loss.parameters())
    torch.testing.assert_close(loss(x, y), value)  # deterministic: no dropout


def _hand_lpips_alex(features, linear, x, y):
    """LPIPS v0.1 (Zhang et al. 2018, eq. 1) written out: tap after each of AlexNet's 5 ReLUs."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    taps, total = (1, 4, 7, 9, 11), 0
    ha, hb = ((2 * x - 1) - shift) / scale, ((2 * y - 1) - shift) / scale
    level = 0
    for index, layer in enumerate(features[:12]):
        ha, hb = layer(ha), layer(hb)
        if index in taps:
            na = ha / (ha.square().sum(1, keepdim=True).sqrt() + 1e-10)
            nb = hb / (hb.square().sum(1, keepdim=True).sqrt() + 1e-10)
            w = linear[f"lin{level}.model.1.weight"]
            total = total + torch.nn.functional.conv2d((na - nb).square(), w).mean(dim=(2, 3))
            level += 1
    return total.flatten()


def test_lpips_source_loads_backbone_file_and_matches_formula(tmp_path):
    # randomly initialised AlexNet in torchvision's file format: checks loading, not a metric value
    torch.manual_seed(0)
    features = torchvision.models.alexnet(weights=None).features.eval()
    path = tmp_path / TORCHVISION_FILES["alexnet"]
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    loss = LPIPSLoss("alex", source="lpips", weights_path=path)
    assert loss.metric_name == "LPIPS(alex)"
    linear_file = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
    linear = torch.load(linear_file, map_location="cpu", weights_only=True)
    x, y = _images(2)
    with torch.no_grad():
        torch.testing.assert_close(loss.per_image(x, y), _hand_lpips_alex(features, linear, x, y))


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_source_without_backbone_file_names_it(net, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    arch = {"alex": "alexnet", "vgg": "vgg16"}[net]
    with pytest.raises(FileNotFoundError) as info:
        LPIPSLoss(net, source="lpips")
    assert TORCHVISION_FILES[arch] in str(info.value) and str(tmp_path) in str(info.value)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="net"):
        LPIPSLoss("squeeze")
    with pytest.raises(ValueError, match="source"):
        LPIPSLoss("alex", source="dists")
    loss = LPIPSLoss("alex")
    with pytest.raises(ValueError, match="equal shape"):
        loss(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 16))
