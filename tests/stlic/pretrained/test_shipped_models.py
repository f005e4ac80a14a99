"""The shipped models load safely, code real bitstreams, and the perceptual one's refiner is at work."""
from pathlib import Path

import pytest
import torch

from stlic.checkpoints import load_model_checkpoint
from stlic.cli import main as stlic_main
from stlic.codec.image_io import read_image, write_image
from stlic.paths import default_train_images, shared_data

ROOT = Path(__file__).resolve().parents[3]
PERCEPTUAL = ROOT / "pretrained" / "stlic_tiny" / "model.pt"


def _photo_crop() -> torch.Tensor:
    kodak = shared_data("kodak")
    paths = sorted(kodak.glob("*.png"))[22:23] if kodak is not None else default_train_images()[:1]
    if not paths:
        pytest.skip("neither ../shared/data/kodak nor scikit-image's photographs are available")
    return read_image(paths[0])[:, :128, :192]


def test_the_shipped_perceptual_model_loads_with_weights_only_and_names_its_training():
    model, config, extra = load_model_checkpoint(PERCEPTUAL)
    assert extra["step"] == 2750 and extra["train_config"]["phase"] == "stlic"
    assert config.refiner_channels == 32 and config.refiner_depth == 3
    assert extra["train_config"]["loss_weights"]["rate"] == [0.135, 1.7]  # the RD start's operating point


def test_compress_and_decompress_with_the_shipped_perceptual_model(tmp_path, capsys):
    image = tmp_path / "crop.png"
    write_image(image, _photo_crop())
    data, refined, decoded = tmp_path / "crop.stlic", tmp_path / "refined.png", tmp_path / "decoded.png"
    assert stlic_main(["compress", "--checkpoint", str(PERCEPTUAL), "--target-bpp", "0.3", str(image), str(data)]) == 0
    assert stlic_main(["decompress", "--checkpoint", str(PERCEPTUAL), str(data), str(refined)]) == 0
    assert stlic_main(["decompress", "--checkpoint", str(PERCEPTUAL), "--decoder-output", str(data),
                       str(decoded)]) == 0
    x, y, z = read_image(image), read_image(refined), read_image(decoded)
    assert y.shape == x.shape == z.shape
    # the refiner changes the image (the identity refiner of the RD start gives exactly 0; the shipped one
    # moves this crop by ~2/255 on average at 0.3 bpp) and stays near it
    assert (y - z).abs().mean() > 1 / 255 and (y - x).abs().mean() < 0.15
    capsys.readouterr()
