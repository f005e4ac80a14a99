"""PNG I/O: exact 8-bit round trip, RGB conversion of other modes, clear errors."""
import numpy as np
import pytest
import torch
from PIL import Image

from stlic.codec.image_io import read_image, to_uint8, write_image


def test_uint8_round_trip_is_exact(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, size=(7, 9, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.shape == (3, 7, 9) and image.dtype == torch.float32
    np.testing.assert_array_equal(to_uint8(image), pixels)
    write_image(tmp_path / "b.png", image)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "b.png")), pixels)


def test_write_clamps_and_rounds(tmp_path):
    image = torch.tensor([-0.5, 0.4 / 255, 1.6 / 255, 2.0]).view(1, 1, 4).expand(3, 1, 4)
    write_image(tmp_path / "c.png", image.unsqueeze(0))
    assert np.asarray(Image.open(tmp_path / "c.png"))[0, :, 0].tolist() == [0, 0, 2, 255]


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "I;16"])
def test_other_modes_become_rgb(tmp_path, mode):
    rng = np.random.default_rng(1)
    if mode == "I;16":
        gray16 = rng.integers(0, 65536, size=(5, 6), dtype=np.uint16)
        Image.fromarray(gray16).save(tmp_path / "x.png")
        expected = np.repeat((gray16 >> 8).astype(np.uint8)[..., None], 3, axis=2)
    else:
        rgba = rng.integers(0, 256, size=(5, 6, 4), dtype=np.uint8)
        source = Image.fromarray(rgba if 'A' in mode else rgba[..., :3]).convert(mode)
        source.save(tmp_path / "x.png")
        expected = np.asarray(source.convert("RGB"))
    np.testing.assert_array_equal(to_uint8(read_image(tmp_path / "x.png")), expected)


def test_clear_errors(tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ValueError, match="not a readable image"):
        read_image(tmp_path / "notes.png")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="cannot write image"):
        write_image(tmp_path / "out.unknownext", torch.rand(3, 4, 4))
    with pytest.raises(ValueError, match="expected a \\(3, H, W\\)"):
        write_image(tmp_path / "out.png", torch.rand(4, 4))
