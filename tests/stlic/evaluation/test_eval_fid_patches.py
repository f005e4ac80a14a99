"""FID/256 patch extraction: counts by hand and contents against explicit slicing."""
import pytest
import torch

from stlic.evaluation.functional import count_fid_patches, extract_fid_patches


@pytest.mark.parametrize(
    "height, width, expected",
    [
        (512, 768, 3 * 2 + 2 * 1),  # Kodak landscape: 6 + shifted crop 384x640 -> 1*2
        (768, 512, 2 * 3 + 1 * 2),  # Kodak portrait
        (256, 256, 1),  # too small for the shifted grid (needs 384)
        (383, 1000, 1 * 3),  # height < 1.5 p: no shifted grid
        (384, 384, 1 + 1),
        (512, 512, 4 + 1),
        (200, 300, 0),
    ],
)
def test_patch_counts_by_hand(height, width, expected):
    assert count_fid_patches(height, width) == expected
    assert extract_fid_patches(torch.zeros(1, 3, height, width)).shape == (expected, 3, 256, 256)


def test_kodak_set_has_192_patches():
    assert 24 * count_fid_patches(512, 768) == 192


def test_patch_contents_are_the_grid_then_the_shifted_grid():
    # 20x28, p=8: grid 2x3; shifted crop [4:, 4:] is 16x24 -> grid 2x3 again
    p = 8
    images = torch.arange(2 * 3 * 20 * 28, dtype=torch.float32).reshape(2, 3, 20, 28)
    patches = extract_fid_patches(images, patch_size=p)
    expected = [images[b, :, i:i + p, j:j + p] for b in range(2) for i in (0, 8) for j in (0, 8, 16)]
    expected += [images[b, :, i:i + p, j:j + p] for b in range(2) for i in (4, 12) for j in (4, 12, 20)]
    assert patches.shape[0] == len(expected) == 2 * count_fid_patches(20, 28, p)
    torch.testing.assert_close(patches, torch.stack(expected))


def test_bad_patch_size_is_rejected():
    with pytest.raises(ValueError, match="positive even"):
        count_fid_patches(512, 512, patch_size=255)
