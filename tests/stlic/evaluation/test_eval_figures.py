"""Comparison figure: crop selection by brute force, file written, bad input rejected."""
import pytest
import torch

from stlic.evaluation.figures import Crop, PanelScores, most_textured_crop, save_comparison_figure


def test_most_textured_crop_matches_brute_force_search():
    g = torch.Generator().manual_seed(0)
    image = torch.full((3, 48, 64), 0.5)
    image[:, 20:36, 30:46] = torch.rand(3, 16, 16, generator=g)  # the only texture
    crop = most_textured_crop(image, size=16)
    gray = image.mean(0)
    best, best_energy = None, -1.0
    for top in range(48 - 16 + 1):
        for left in range(64 - 16 + 1):
            window = gray[top:top + 16, left:left + 16]
            # same energy as the implementation: |dx| and |dy| assigned to the right/lower pixel
            dx = (gray[top:top + 16, max(left, 1) - 1:left + 15] if left == 0 else gray[top:top + 16, left - 1:left + 15])
            energy = (window[:, 1:] - window[:, :-1]).abs().sum() if left == 0 else (window - dx).abs().sum()
            dy = gray[top - 1:top + 15, left:left + 16] if top > 0 else None
            energy = energy + ((window[1:] - window[:-1]).abs().sum() if dy is None else (window - dy).abs().sum())
            if energy > best_energy + 1e-6:
                best, best_energy = (top, left), float(energy)
    assert (crop.top, crop.left) == best
    assert 20 - 16 < crop.top <= 20 and 30 - 16 < crop.left <= 30


def test_comparison_figure_is_written(tmp_path):
    x = torch.rand(1, 3, 64, 96)
    path = save_comparison_figure(
        tmp_path / "fig.png", x, x * 0.9, x * 0.95, 0.123, PanelScores(30.0, 0.2), PanelScores(29.0, 0.1),
        "ST-LPIPS(vgg)", crop=Crop(8, 8, 24),
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="differ in shape"):
        save_comparison_figure(tmp_path / "bad.png", x, x[..., :32], x, 0.1, PanelScores(1.0), PanelScores(1.0))
