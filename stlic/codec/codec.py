"""File-level ST-LIC codec: image tensor <-> ``.stlic`` bytes, and a target-bpp rate search.

``compress_image`` runs ``model.compress`` (LALIC main network + rANS) and wraps the strings in
the container of :mod:`stlic.codec.bitstream`; ``decompress_image`` checks the container, the
model fingerprint, a decoder size limit and the layout of both strings against the image size
*before* the networks allocate anything. A decoder whose entropy parameters differ from the
encoder's fails the strings' symbol checksum: the error names what differs between the encoder's
device and numerics (stored in the container) and the decoder's, or, when nothing does, says the
file is damaged. The rate is the file size: ``bpp = 8 * len(file) / (H * W)``,
header and checksums included.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from stlic.codec.bitstream import BitstreamError, Container, parse_container, write_container
from stlic.codec.fingerprint import model_fingerprint
from stlic.codec.memory import memory_guard
from stlic.entropy.rans_stream import LatentStringError, SymbolChecksumError, split_chunks
from stlic.models.lalic import SIZE_MULTIPLE
from stlic.models.outputs import DecodedImage
from stlic.models.parameter_path import PARAMETER_DTYPE

#: largest image ``decompress_image`` decodes by default (pixels): 8K UHD fits (7680 x 4320)
DECODE_MAX_PIXELS = 1 << 25


def _as_batch(image: Tensor) -> Tensor:
    """(3, H, W) or (1, 3, H, W) float image in [0, 1] -> (1, 3, H, W)."""
    if not isinstance(image, Tensor) or not image.is_floating_point():
        raise ValueError("image must be a float tensor with values in [0, 1]")
    batch = image.unsqueeze(0) if image.dim() == 3 else image
    if batch.dim() != 4 or batch.shape[:2] != (1, 3):
        raise ValueError(f"expected one RGB image (3, H, W) or (1, 3, H, W), got shape {tuple(image.shape)}")
    return batch


def n_levels(model: nn.Module) -> int:
    return len(model.rate_lambdas)


def coding_level(model: nn.Module, level: float) -> float:
    """``level`` checked against the model's range and rounded to float32 (what the file stores),
    so the encoder uses exactly the level the decoder will read."""
    level = float(level)
    top = n_levels(model) - 1
    if not math.isfinite(level) or not 0.0 <= level <= top:
        raise ValueError(f"rate level {level} outside the model's range [0, {top}]")
    return float(np.float32(level))


def numerics(model: nn.Module) -> str:
    """What ``model`` computes the entropy parameters with, e.g. ``"cuda float64 torch 2.9.1"``."""
    device = next(model.parameters()).device
    dtype = getattr(getattr(model, "main", model), "parameter_dtype", PARAMETER_DTYPE)
    return f"{device.type} {str(dtype).removeprefix('torch.')} torch {torch.__version__}"


def check_decodable_size(height: int, width: int, max_pixels: int = DECODE_MAX_PIXELS) -> None:
    """Refuse an image the decoder would refuse (over ``max_pixels``), before encoding it."""
    if height < 1 or width < 1:
        raise ValueError(f"image of {height}x{width} pixels is empty")
    if height * width > max_pixels:
        raise ValueError(
            f"image of {width}x{height} = {height * width} pixels exceeds the decoder's limit of {max_pixels} "
            "pixels, so its file could not be decoded; compress a downscaled or cropped copy"
        )


@torch.no_grad()
def compress_image(model: nn.Module, image: Tensor, level: float, max_pixels: int = DECODE_MAX_PIXELS) -> bytes:
    """Encode one image (values in [0, 1], any size up to ``max_pixels``) into ``.stlic`` bytes.

    The size and the memory the encoder needs (:mod:`stlic.codec.memory`) are checked first."""
    batch = _as_batch(image)
    level = coding_level(model, level)
    height, width = (int(s) for s in batch.shape[-2:])
    check_decodable_size(height, width, max_pixels)
    device = next(model.parameters()).device
    with memory_guard("compress", model.config, height, width, device):
        compressed = model.compress(batch.to(device), level)
    container = Container(
        fingerprint=model_fingerprint(model),
        encoder=numerics(model),
        original_size=tuple(int(s) for s in batch.shape[-2:]),
        level=level,
        latent_shape=tuple(int(s) for s in compressed.shape),
        strings=tuple(tuple(group) for group in compressed.strings),
    )
    return write_container(container)


def read_container(model: nn.Module, data: bytes, max_pixels: int = DECODE_MAX_PIXELS) -> Container:
    """Parse ``data`` and check it was made by ``model``, fits its level range and ``max_pixels``,
    and that its strings have the layout of that image size (no decoding, no allocation)."""
    container = parse_container(data)
    expected = model_fingerprint(model)
    if container.fingerprint != expected:
        raise BitstreamError(
            f"file was made with a different model (fingerprint {container.fingerprint.hex()}, "
            f"this model {expected.hex()}); decode with the checkpoint that encoded it"
        )
    if container.level > n_levels(model) - 1:
        raise BitstreamError(f"rate level {container.level} outside the model's range [0, {n_levels(model) - 1}]")
    if len(container.strings) != 2 or any(len(group) != 1 for group in container.strings):
        raise BitstreamError("an .stlic file holds one image: a y string and a z string")
    height, width = container.original_size
    expected_shape = (-(-height // SIZE_MULTIPLE), -(-width // SIZE_MULTIPLE))
    if container.latent_shape != expected_shape:
        raise BitstreamError(
            f"latent shape {container.latent_shape} does not match a {height}x{width} image "
            f"(expected z of size {expected_shape})"
        )
    if height * width > max_pixels:
        raise BitstreamError(
            f"image of {height}x{width} = {height * width} pixels exceeds this decoder's limit of "
            f"{max_pixels} pixels (decompress_image(..., max_pixels=...) to allow it)"
        )
    positions = expected_shape[0] * expected_shape[1]
    config = model.config
    try:
        # y has 4 x 4 positions per position of z (strides 16 and 64)
        split_chunks(container.strings[0][0], config.latent_channels * 16 * positions, "y")
        split_chunks(container.strings[1][0], config.hyper_channels[1] * positions, "z")
    except LatentStringError as error:
        raise BitstreamError(str(error)) from None
    return container


@torch.no_grad()
def decompress_image(model: nn.Module, data: bytes, max_pixels: int = DECODE_MAX_PIXELS, *,
                     refine: bool = True) -> DecodedImage:
    """Decode ``.stlic`` bytes: decoder output ``x_hat`` and refined ``x_refined``, (1, 3, H, W);
    ``refine=False`` skips the refiner (``x_refined`` is then ``x_hat``).

    Raises BitstreamError for a malformed file (before decoding) and SymbolChecksumError when
    the decoded symbols differ from the encoder's.
    """
    container = read_container(model, data, max_pixels)
    strings = [list(group) for group in container.strings]
    height, width = container.original_size
    try:
        with memory_guard("decompress", model.config, height, width, next(model.parameters()).device,
                          decode=True, refine=refine):
            return model.decompress(strings, container.latent_shape, container.level, container.original_size,
                                    refine=refine)
    except SymbolChecksumError as error:
        if error.latent != "y":
            raise
        raise SymbolChecksumError(checksum_message(container.encoder, numerics(model)), error.latent) from None


def checksum_message(encoder: str, decoder: str) -> str:
    """Why the y symbols failed their checksum: what differs between the encoder's numerics and
    this decoder's (``"cpu float64 torch 2.9.1"``), or, when nothing does, a damaged file."""
    head = "decoded latent y fails the encoder's checksum of CDF indexes and symbols"
    if encoder == decoder:
        return (f"{head}: the file is damaged (its container checksum holds, but encoder and decoder "
                f"numerics are the same, '{decoder}', so the strings themselves were changed)")
    names = ("device", "precision", "library")
    old, new = encoder.split(" ", 2), decoder.split(" ", 2)
    differ = [f"{name} '{a}' -> '{b}'" for name, a, b in zip(names, old, new) if a != b]
    if len(old) != 3 or len(new) != 3 or not differ:
        differ = [f"'{encoder}' -> '{decoder}'"]
    return (f"{head}: encoder and decoder differ in {', '.join(differ)} (file encoded with '{encoder}', "
            f"this decoder runs '{decoder}'); decode with the encoder's numerics, or the file is damaged")


def bits_per_pixel(data: bytes, image: Tensor) -> float:
    """``8 * bytes / (H * W)`` of a file for ``image``."""
    height, width = image.shape[-2:]
    return 8.0 * len(data) / (height * width)


@dataclass(frozen=True)
class RateSearchResult:
    """Outcome of :func:`find_level_for_bpp`: the chosen level, its file and achieved rate."""

    level: float
    data: bytes
    bpp: float
    target_bpp: float
    iterations: int
    feasible: bool  # False when the target lies outside the rates of levels 0 .. n-1

    @property
    def relative_error(self) -> float:
        return abs(self.bpp - self.target_bpp) / self.target_bpp


def find_level_for_bpp(
    model: nn.Module, image: Tensor, target_bpp: float, rel_tolerance: float = 0.02, max_iterations: int = 16
) -> RateSearchResult:
    """Continuous QVRF level whose file rate is closest to ``target_bpp``.

    A larger level has a larger rate coefficient, and training pushes its rate down, but nothing
    enforces the order: the gains of levels 1.. are learned and level 0's is fixed at 1, so level 1
    can spend more bits than level 0 (the shipped ``pretrained/lalic_tiny_rd`` model does). So: probe
    both ends; if they do not bracket the target, probe every integer level and take the first
    consecutive pair that does; then bisect within the bracket, keeping the target between the
    rates of its ends, until ``|bpp - target| <= rel_tolerance * target``. Every probe is a real
    encode; the closest file seen is returned, with ``feasible=False`` when no level reaches the
    target within the tolerance.
    """
    if not (math.isfinite(target_bpp) and target_bpp > 0):
        raise ValueError(f"target bpp must be a positive number, got {target_bpp}")
    if not 0 < rel_tolerance < 1:
        raise ValueError(f"relative bpp tolerance must lie in (0, 1), got {rel_tolerance}")
    probes: list[tuple[float, bytes, float]] = []

    def probe(level: float) -> float:
        data = compress_image(model, image, level)
        probes.append((coding_level(model, level), data, bits_per_pixel(data, image)))
        return probes[-1][2]

    def close(bpp: float) -> bool:
        return abs(bpp - target_bpp) <= rel_tolerance * target_bpp

    def result(feasible: bool) -> RateSearchResult:
        level, data, bpp = min(probes, key=lambda p: abs(p[2] - target_bpp))
        return RateSearchResult(level, data, bpp, float(target_bpp), len(probes), feasible)

    def brackets(a: float, b: float) -> bool:
        return min(a, b) <= target_bpp <= max(a, b)

    top = n_levels(model) - 1
    low, high = 0.0, float(top)
    rate_low = probe(low)
    if close(rate_low):
        return result(feasible=True)
    rate_high = probe(high) if top > 0 else rate_low
    if close(rate_high):
        return result(feasible=True)
    if not brackets(rate_low, rate_high):
        rates = [rate_low] + [probe(float(level)) for level in range(1, top)] + [rate_high]
        pairs = [level for level in range(top) if brackets(rates[level], rates[level + 1])]
        if not pairs:
            return result(feasible=close(result(False).bpp))
        low, high = float(pairs[0]), float(pairs[0] + 1)
        rate_low = rates[pairs[0]]
    while len(probes) < max_iterations:
        middle = 0.5 * (low + high)
        bpp = probe(middle)
        if close(bpp):
            break
        low, high, rate_low = (middle, high, bpp) if (bpp > target_bpp) == (rate_low > target_bpp) else \
            (low, middle, rate_low)
    return result(feasible=True)
