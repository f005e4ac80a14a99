"""VGG-16 feature extractor: weight resolution, taps, frozen backbone, clear errors.

The ImageNet path is exercised with a *randomly initialised* torchvision VGG-16 saved in the
torchvision file format: it checks file lookup, re-keying and tap indices against torchvision's
own module, never a metric value.
"""
import pytest
import torch
from torchvision.models.vgg import cfgs, make_layers

from stlic.losses import VGG16FeatureExtractor
from stlic.losses.weights import TORCHVISION_FILES

TAP_INDICES = (3, 8, 15, 22, 29)  # relu1_2 .. relu5_3 in torchvision's vgg16().features


@pytest.fixture(scope="module")
def fake_imagenet_vgg16(tmp_path_factory):
    """(state_dict, TORCH_HOME) with a torchvision-format vgg16 features file in the hub cache."""
    torch.manual_seed(0)
    features = make_layers(cfgs["D"])  # torchvision's vgg16().features, without the classifier
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    home = tmp_path_factory.mktemp("torch_home")
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(state, home / "hub" / "checkpoints" / TORCHVISION_FILES["vgg16"])
    return features.eval(), home


def test_hub_cache_vgg16_is_found_and_taps_match_torchvision(fake_imagenet_vgg16, monkeypatch):
    features, home = fake_imagenet_vgg16
    monkeypatch.setenv("TORCH_HOME", str(home))
    extractor = VGG16FeatureExtractor()
    assert extractor.backbone_name == "vgg16-imagenet"
    x = torch.rand(1, 3, 32, 48)
    h, expected = (x - extractor.mean) / extractor.std, []
    with torch.no_grad():
        for index, layer in enumerate(features[:30]):
            h = layer(h)
            if index in TAP_INDICES:
                expected.append(h.clone())
        ours = extractor(x)
    assert len(ours) == 5
    for got, want in zip(ours, expected):
        torch.testing.assert_close(got, want)


def test_average_pooling_replaces_every_max_pool(fake_imagenet_vgg16, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(fake_imagenet_vgg16[1]))
    extractor = VGG16FeatureExtractor(backbone="vgg16", average_pooling=True)
    kinds = [type(layer) for layer in extractor.layers]
    assert torch.nn.MaxPool2d not in kinds and kinds.count(torch.nn.AvgPool2d) == 4
    assert extractor.backbone_name == "vgg16-imagenet-avgpool"


def test_missing_imagenet_file_names_file_and_place(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        VGG16FeatureExtractor(backbone="vgg16")
    assert TORCHVISION_FILES["vgg16"] in str(info.value)
    assert str(tmp_path / "hub" / "checkpoints") in str(info.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VGG16FeatureExtractor(weights_path=tmp_path / "nope.pth")


def test_offline_fallback_is_named(tmp_path, monkeypatch):
    # its features are compared with the stlpips-pytorch trunk in test_loss_lpips.py
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert VGG16FeatureExtractor().backbone_name == "stlpips-vgg16-antialiased"


def test_frozen_eval_and_gradient_reaches_input(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    extractor = VGG16FeatureExtractor().train()
    assert not extractor.training and not any(p.requires_grad for p in extractor.parameters())
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    extractor(x).relu3_3.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in extractor.parameters())


def test_bad_inputs_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    extractor = VGG16FeatureExtractor()
    with pytest.raises(ValueError, match="RGB"):
        extractor(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match="at least"):
        extractor(torch.rand(1, 3, 8, 32))
    with pytest.raises(ValueError, match="backbone"):
        VGG16FeatureExtractor(backbone="resnet")
