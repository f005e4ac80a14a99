"""FID/256 patch protocol of HiFiC (Mentzer et al. 2020, "High-Fidelity Generative Image
Compression", Sec. 4): FID on a few large images is computed over 256x256 patches.

Each image is cut into the grid of non-overlapping ``p x p`` patches (p = 256), then, when both
sides are at least ``1.5 p``, a second grid is cut from the image shifted by ``p/2`` in both
directions (crop ``[p/2:, p/2:]``), as NeuralCompression's ``update_patch_fid`` does.

    count(H, W) = floor(H/p) floor(W/p) + [H >= 1.5p and W >= 1.5p] floor((H-p/2)/p) floor((W-p/2)/p)

A 768x512 Kodak image gives 3*2 + 2*1 = 8 patches, so Kodak gives 24 * 8 = 192.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

FID_PATCH_SIZE = 256


def _has_shifted_grid(height: int, width: int, patch_size: int) -> bool:
    return height >= 1.5 * patch_size and width >= 1.5 * patch_size


def count_fid_patches(height: int, width: int, patch_size: int = FID_PATCH_SIZE) -> int:
    """Number of FID/256 patches :func:`extract_fid_patches` cuts from one H x W image."""
    if patch_size <= 0 or patch_size % 2:
        raise ValueError(f"patch_size must be a positive even number, got {patch_size}")
    count = (height // patch_size) * (width // patch_size)
    if _has_shifted_grid(height, width, patch_size):
        half = patch_size // 2
        count += ((height - half) // patch_size) * ((width - half) // patch_size)
    return count


def _grid(images: Tensor, patch_size: int) -> Tensor:
    channels = images.shape[1]
    cols = F.unfold(images, kernel_size=patch_size, stride=patch_size)  # (B, C*p*p, L)
    return cols.permute(0, 2, 1).reshape(-1, channels, patch_size, patch_size)


def extract_fid_patches(images: Tensor, patch_size: int = FID_PATCH_SIZE) -> Tensor:
    """All FID/256 patches of a (B, C, H, W) batch: (N, C, p, p), unshifted grid first.

    Images smaller than ``p`` on a side give no patches (an empty tensor).
    """
    if images.ndim != 4:
        raise ValueError(f"expected a batch (B, C, H, W), got shape {tuple(images.shape)}")
    height, width = images.shape[-2:]
    count_fid_patches(height, width, patch_size)  # validates patch_size
    patches = [_grid(images, patch_size)] if min(height, width) >= patch_size else []
    if _has_shifted_grid(height, width, patch_size):
        half = patch_size // 2
        patches.append(_grid(images[:, :, half:, half:], patch_size))
    if not patches:
        return images.new_zeros((0, images.shape[1], patch_size, patch_size))
    return torch.cat(patches)
