"""Image folders: edge cases (non-images, gray, RGBA, palette, tiny), crops, resumable sampler."""
from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from stlic.training.data import ImageFolder, ResumableSampler, find_images, fit_to_patch, load_rgb


@pytest.fixture
def mixed_folder(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "mixed"
    (root / "nested").mkdir(parents=True)
    rgb = rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(root / "rgb.png")
    Image.fromarray(rng.integers(0, 256, (66, 80), dtype=np.uint8), mode="L").save(root / "nested" / "gray.png")
    rgba = rng.integers(0, 256, (72, 72, 4), dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(root / "rgba.png")
    Image.fromarray(rgb).convert("P").save(root / "palette.png")
    Image.fromarray(rng.integers(0, 256, (10, 7, 3), dtype=np.uint8)).save(root / "tiny.jpg")
    (root / "README.txt").write_text("not an image")
    (root / "broken.png").write_bytes(b"\x89PNG but truncated")
    return root, rgb, rgba


def test_non_images_are_skipped_with_a_warning_naming_them(mixed_folder):
    root, _, _ = mixed_folder
    with pytest.warns(UserWarning) as record:
        files = find_images([root])
    messages = " ".join(str(w.message) for w in record)
    assert "README.txt" in messages and "broken.png" in messages
    assert sorted(p.name for p in files) == ["gray.png", "palette.png", "rgb.png", "rgba.png", "tiny.jpg"]


def test_modes_are_converted_to_rgb(mixed_folder):
    root, rgb, rgba = mixed_folder
    gray = load_rgb(root / "nested" / "gray.png")
    assert gray.shape == (3, 66, 80) and torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert torch.equal(load_rgb(root / "rgba.png"), torch.from_numpy(rgba[..., :3]).permute(2, 0, 1) / 255.0)
    palette = load_rgb(root / "palette.png")
    assert palette.shape == (3, 70, 90) and 0 <= palette.min() and palette.max() <= 1


def test_every_item_is_a_patch_in_unit_range(mixed_folder):
    root, _, _ = mixed_folder
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = ImageFolder([root], patch_size=64)
    for index in range(len(dataset)):
        patch = dataset[(index, 123 + index)]
        assert patch.shape == (3, 64, 64) and patch.dtype == torch.float32
        assert 0 <= float(patch.min()) and float(patch.max()) <= 1


def test_reflect_padding_matches_numpy_even_when_repeated():
    image = torch.rand(3, 10, 7, dtype=torch.float64)
    padded = fit_to_patch(image, 64, "pad")
    reference = np.pad(image.numpy(), ((0, 0), (0, 54), (0, 57)), mode="reflect")
    assert padded.shape == (3, 64, 64)
    np.testing.assert_array_equal(padded.numpy(), reference)


def test_one_pixel_side_is_replicated_and_upscale_keeps_aspect():
    line = torch.rand(3, 1, 30)
    padded = fit_to_patch(line, 64, "pad")
    assert padded.shape == (3, 64, 64) and torch.equal(padded[:, 5, :30], line[:, 0])
    upscaled = fit_to_patch(torch.rand(3, 16, 32), 64, "upscale")
    assert upscaled.shape == (3, 64, 128)
    large = torch.rand(3, 80, 70)
    assert fit_to_patch(large, 64) is large


def test_crop_is_deterministic_in_the_sample_seed(photos):
    dataset = ImageFolder([photos], patch_size=64)
    assert torch.equal(dataset[(1, 7)], dataset[(1, 7)])
    assert not torch.equal(dataset[(1, 7)], dataset[(1, 8)])
    full = load_rgb(dataset.files[1])
    patch = dataset[(1, 7)]
    windows = [full[:, i:i + 64, j:j + 64] for i in range(full.shape[1] - 63) for j in range(full.shape[2] - 63)]
    assert any(torch.equal(patch, w) or torch.equal(patch, w.flip(-1)) for w in windows)


def test_decoded_image_cache_gives_the_same_crops_and_respects_its_bound(mixed_folder):
    root, _, _ = mixed_folder
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cached = ImageFolder([root], patch_size=64)
        uncached = ImageFolder([root], patch_size=64, cache_bytes=0)
        bounded = ImageFolder([root], patch_size=64, cache_bytes=3 * 70 * 90)  # room for one image
    for _ in range(2):  # second round: from the cache
        for index in range(len(cached)):
            expected = uncached[(index, 5 + index)]
            assert torch.equal(cached[(index, 5 + index)], expected)
            assert torch.equal(bounded[(index, 5 + index)], expected)
    assert len(cached._cache) == len(cached) and not uncached._cache
    assert sum(p.numel() for p in bounded._cache.values()) <= 3 * 70 * 90


def test_folder_without_images_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.md").write_text("# nothing")
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no images found.*empty"):
        find_images([tmp_path / "empty"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_images([tmp_path / "missing"])


def _take(sampler, count):
    return list(itertools.islice(iter(sampler), count))


def test_sampler_epochs_are_permutations_and_ranks_partition_the_stream():
    single = _take(ResumableSampler(5, seed=3), 20)
    for epoch in range(4):
        assert sorted(index for index, _ in single[5 * epoch:5 * epoch + 5]) == list(range(5))
    ranks = [_take(ResumableSampler(5, seed=3, rank=r, world_size=2), 10) for r in range(2)]
    interleaved = [item for pair in zip(*ranks) for item in pair]
    assert interleaved == single


def test_sampler_start_continues_the_stream():
    stream = _take(ResumableSampler(7, seed=11, stream=1, rank=1, world_size=3), 12)
    assert _take(ResumableSampler(7, seed=11, stream=1, rank=1, world_size=3, start=5), 7) == stream[5:]
    assert stream != _take(ResumableSampler(7, seed=11, stream=0, rank=1, world_size=3), 12)


def test_decoded_image_cache_gives_the_same_crops(tmp_path):
    from stlic_training_helpers import write_photos
    from stlic.training.data import ImageFolder

    photos = write_photos(tmp_path / "photos", count=3, size=(80, 96))
    cached, uncached = ImageFolder([photos], 64), ImageFolder([photos], 64, cache_bytes=0)
    small = ImageFolder([photos], 128)  # smaller than the patch: padded from the cached pixels
    for item in [(i % 3, 100 + i) for i in range(9)]:
        assert torch.equal(cached[item], uncached[item])
        assert small[item].shape == (3, 128, 128)
    assert len(cached._cache) == 3 and not uncached._cache
    with pytest.raises(ValueError, match="cache_bytes"):
        ImageFolder([photos], 64, cache_bytes=-1)
