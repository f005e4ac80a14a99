"""A corrupt image among good ones is skipped with a warning naming it, unless strict."""
from __future__ import annotations

import warnings

import pytest
import torch

from stlic.training.data import ImageFolder


@pytest.fixture
def folder_with_a_corrupt_image(photos):
    good = sorted(photos.glob("*.png"))[0].read_bytes()
    (photos / "photo_1.png").write_bytes(good[: len(good) // 3])  # a valid header, truncated pixels
    return photos


def test_a_corrupt_image_is_skipped_with_a_warning_naming_it(folder_with_a_corrupt_image):
    dataset = ImageFolder([folder_with_a_corrupt_image], patch_size=64)
    assert [p.name for p in dataset.files] == ["photo_0.png", "photo_1.png", "photo_2.png"]
    with pytest.warns(UserWarning, match=r"skipping training image .*photo_1\.png"):
        patch = dataset[(1, 7)]
    assert patch.shape == (3, 64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        expected = dataset[(2, 7)]  # the next readable file, same crop seed
    torch.testing.assert_close(patch, expected, rtol=0, atol=0)


def test_strict_data_stops_on_the_corrupt_image(folder_with_a_corrupt_image):
    dataset = ImageFolder([folder_with_a_corrupt_image], patch_size=64, strict=True)
    with pytest.raises(ValueError, match=r"photo_1\.png.*cannot be decoded.*strict"):
        dataset[(1, 7)]
    dataset[(0, 7)]  # the good ones still load


def test_strict_data_also_refuses_a_non_image(photos):
    (photos / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match="notes.txt"):
        assert len(ImageFolder([photos], patch_size=64)) == 3
    with pytest.raises(ValueError, match=r"notes\.txt.*strict"):
        ImageFolder([photos], patch_size=64, strict=True)
