"""Visual comparisons in the style of ST-LIC's Fig. 3/4: original, decoder output and refined
output side by side (top row, crop rectangle marked), the same zoomed crop below each, with bpp,
PSNR and LPIPS in the titles.

The crop defaults to the most textured window (largest mean gradient magnitude of the original),
where decoder blur and refiner texture differ most.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.patches as mpatches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor  # noqa: E402


class Crop(NamedTuple):
    top: int
    left: int
    size: int


class PanelScores(NamedTuple):
    """Numbers printed above a reconstruction panel."""

    psnr: float
    lpips: float | None = None


def most_textured_crop(image: Tensor, size: int | None = None) -> Crop:
    """Square window of side ``size`` (default a quarter of the short side, >= 16 px) maximising
    the mean absolute gradient of the (3, H, W) image."""
    height, width = image.shape[-2:]
    size = min(size or max(16, min(height, width) // 4), height, width)
    gray = image.detach().float().mean(dim=0)
    grad = torch.zeros_like(gray)
    grad[:, 1:] += (gray[:, 1:] - gray[:, :-1]).abs()
    grad[1:, :] += (gray[1:, :] - gray[:-1, :]).abs()
    energy = F.avg_pool2d(grad[None, None], size, stride=1)[0, 0]  # (H-size+1, W-size+1)
    index = int(torch.argmax(energy))
    return Crop(index // energy.shape[1], index % energy.shape[1], size)


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 150) -> Path:
    """Tight layout, save atomically (format from the suffix; :mod:`stlic.output_files`), close; returns the path."""
    from stlic.output_files import atomic_write

    fig.tight_layout()
    path = Path(path)
    try:
        atomic_write(path, lambda handle: fig.savefig(handle, dpi=dpi, format=path.suffix[1:] or "png"))
    finally:
        plt.close(fig)
    return path


def _to_numpy(image: Tensor):
    image = image[0] if image.dim() == 4 else image
    return image.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy()


def _title(name: str, bpp: float, scores: PanelScores, lpips_name: str) -> str:
    lpips = "" if scores.lpips is None else f", {lpips_name} {scores.lpips:.4f}"
    return f"{name}\n{bpp:.4f} bpp, {scores.psnr:.2f} dB{lpips}"


def save_comparison_figure(
    path: str | Path,
    original: Tensor,
    decoded: Tensor,
    refined: Tensor,
    bpp: float,
    decoded_scores: PanelScores,
    refined_scores: PanelScores,
    lpips_name: str = "LPIPS",
    crop: Crop | None = None,
    image_name: str = "original",
) -> Path:
    """Save the 2x3 comparison figure (PNG/PDF from the suffix); images are (3, H, W) or (1, 3, H, W)."""
    images = [x[0] if x.dim() == 4 else x for x in (original, decoded, refined)]
    if not (images[0].shape == images[1].shape == images[2].shape):
        raise ValueError(f"images differ in shape: {[tuple(x.shape) for x in images]}")
    crop = crop or most_textured_crop(images[0])
    titles = [
        image_name,
        _title("decoder output", bpp, decoded_scores, lpips_name),
        _title("refined (ST-LIC)", bpp, refined_scores, lpips_name),
    ]
    height, width = images[0].shape[-2:]
    fig, axes = plt.subplots(2, 3, figsize=(12, 4.0 * height / width + 4.2), squeeze=False)
    for column, (image, title) in enumerate(zip(images, titles)):
        full, zoom = axes[0, column], axes[1, column]
        full.imshow(_to_numpy(image))
        full.add_patch(mpatches.Rectangle((crop.left, crop.top), crop.size, crop.size, fill=False, edgecolor="red", linewidth=1.5))
        full.set_title(title, fontsize=9)
        zoom.imshow(_to_numpy(image[:, crop.top:crop.top + crop.size, crop.left:crop.left + crop.size]), interpolation="nearest")
        for axis in (full, zoom):
            axis.set_xticks([])
            axis.set_yticks([])
    return save_figure(fig, path, dpi=120)
