"""A small built-in probe target (``gradbalance probe --model example``).

A convolutional autoencoder trained like a learned image codec, with three losses:

* ``rate``: a rate proxy on the noisy latent, ``mean log2(1 + ỹ²)``, ỹ = y + u, u ~ U(-½, ½)
  (it reaches only the encoder: the "-" cell of Table I);
* ``l2``: mean squared error and ``l1``: mean absolute error of the reconstruction.

Groups: ``encoder`` (convolutions + BatchNorm) and ``decoder``. As in QVRF-style variable-rate
training, the rate weight is drawn log-uniformly from the configured range ``[lo, hi]`` per batch.
Images: ``--data`` folders, else scikit-image's bundled photographs (no downloads).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradbalance.io.export import load_yaml_mapping, loss_weight_block
from gradbalance.targets.target import BackwardFn

LOSS_ORDER = ("rate", "l2", "l1")
DEFAULT_WEIGHTS = {"rate": [0.002, 0.02], "l2": 1.0, "l1": 0.1}
#: preset -> (channels, latent channels, patch size, batch size)
PRESETS = {"tiny": (8, 4, 32, 4), "small": (16, 8, 64, 8)}
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class TinyAutoencoder(nn.Module):
    """Two stride-2 convolutions down (with BatchNorm), two transposed convolutions up."""

    def __init__(self, channels: int = 8, latent: int = 4) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, channels, 5, stride=2, padding=2), nn.BatchNorm2d(channels), nn.GELU(),
            nn.Conv2d(channels, latent, 5, stride=2, padding=2))
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(latent, channels, 5, stride=2, padding=2, output_padding=1), nn.GELU(),
            nn.ConvTranspose2d(channels, 3, 5, stride=2, padding=2, output_padding=1))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Reconstruction and noisy latent ỹ = g_a(x) + U(-½, ½)."""
        y = self.encoder(x)
        y_noisy = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        return self.decoder(y_noisy), y_noisy


def example_losses(model: TinyAutoencoder, x: Tensor) -> dict[str, Tensor]:
    """The unweighted losses ``rate``, ``l2``, ``l1`` of one batch."""
    x_hat, y_noisy = model(x)
    return {"rate": torch.log2(1 + y_noisy.square()).mean(),
            "l2": F.mse_loss(x_hat, x), "l1": F.l1_loss(x_hat, x)}


def load_images(folders: Optional[Sequence[str]]) -> list[Tensor]:
    """RGB images in [0, 1] as (3, H, W) tensors from ``folders``, else scikit-image's photos."""
    if not folders:
        import skimage.data
        arrays = [getattr(skimage.data, name)() for name in SKIMAGE_PHOTOS]
    else:
        from PIL import Image
        paths = sorted(p for folder in folders for p in Path(folder).iterdir()
                       if p.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {list(folders)}")
        arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    return [torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float() / 255.0 for a in arrays]


def random_crops(images: Sequence[Tensor], size: int, batch: int, generator: torch.Generator) -> Tensor:
    """``batch`` random ``size``×``size`` crops (images smaller than ``size`` are an error)."""
    crops = []
    for _ in range(batch):
        image = images[int(torch.randint(len(images), (), generator=generator))]
        h, w = image.shape[-2:]
        if h < size or w < size:
            raise ValueError(f"image of size {h}x{w} is smaller than the patch size {size}")
        top = int(torch.randint(h - size + 1, (), generator=generator))
        left = int(torch.randint(w - size + 1, (), generator=generator))
        crops.append(image[:, top:top + size, left:left + size])
    return torch.stack(crops)


@dataclass
class ExampleTarget:
    """:class:`~gradbalance.targets.target.ProbeTarget` for :class:`TinyAutoencoder`."""

    model: TinyAutoencoder
    optimizer: torch.optim.Optimizer
    images: list[Tensor]
    weights: dict
    patch_size: int
    batch_size: int
    device: torch.device
    generator: torch.Generator
    description: str = ""
    loss_order: tuple[str, ...] = LOSS_ORDER
    groups: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.groups = {"encoder": self.model.encoder, "decoder": self.model.decoder}

    def rate_weight(self) -> float:
        """λ drawn log-uniformly from the rate range (a scalar rate weight is used as is)."""
        rate = self.weights["rate"]
        if not isinstance(rate, list):
            return float(rate)
        lo, hi = math.log(rate[0]), math.log(rate[1])
        return math.exp(lo + (hi - lo) * float(torch.rand((), generator=self.generator)))

    def train_step(self, step: int, backward: BackwardFn) -> None:
        x = random_crops(self.images, self.patch_size, self.batch_size, self.generator).to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        losses = example_losses(self.model, x)
        weights = {"rate": self.rate_weight(), "l2": float(self.weights["l2"]), "l1": float(self.weights["l1"])}
        backward(losses, weights)
        self.optimizer.step()


def make_example_target(config: Optional[str] = None, preset: Optional[str] = None, device: str = "cpu",
                        data: Optional[list[str]] = None, seed: int = 0, batch_size: Optional[int] = None,
                        patch_size: Optional[int] = None) -> ExampleTarget:
    """Factory registered as the ``example`` target (entry point ``gradbalance.targets``).

    ``config`` is a YAML file with a ``loss_weights:`` block (keys rate [lo, hi], l2, l1).
    """
    preset = preset or "tiny"
    if preset not in PRESETS:
        raise ValueError(f"unknown example preset {preset!r}; choose from {sorted(PRESETS)}")
    channels, latent, default_patch, default_batch = PRESETS[preset]
    weights = dict(DEFAULT_WEIGHTS)
    if config is not None:
        block = loss_weight_block(load_yaml_mapping(config), source=config)
        unknown = set(block) - set(LOSS_ORDER)
        if unknown:
            raise ValueError(f"{config}: unknown loss weight(s) {sorted(unknown)}; expected {list(LOSS_ORDER)}")
        weights.update(block)
    torch.manual_seed(seed)
    model = TinyAutoencoder(channels, latent).to(device)
    patch, batch = patch_size or default_patch, batch_size or default_batch
    images = load_images(data)
    description = (f"example TinyAutoencoder preset={preset} ({channels} ch, latent {latent}), "
                   f"{batch}x{patch}px crops of {len(images)} image(s) from "
                   f"{', '.join(data) if data else 'scikit-image photos'}, device={device}, weights={weights}")
    return ExampleTarget(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3), images=images,
                         weights=weights, patch_size=patch, batch_size=batch, device=torch.device(device),
                         generator=torch.Generator().manual_seed(seed), description=description)
