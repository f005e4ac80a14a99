"""The real ST-LIC codec: ``.stlic`` container, model fingerprint, file-level encode/decode.

Example:
    >>> import torch
    >>> from stlic.models import STLIC
    >>> model = STLIC("tiny").eval(); _ = model.update(force=True)
    >>> image = torch.rand(3, 40, 56)
    >>> data = compress_image(model, image, level=1.0)
    >>> decompress_image(model, data).x_refined.shape
    torch.Size([1, 3, 40, 56])
"""
from stlic.codec.bitstream import BitstreamError, Container, parse_container, write_container
from stlic.codec.codec import (
    RateSearchResult,
    bits_per_pixel,
    compress_image,
    decompress_image,
    find_level_for_bpp,
)
from stlic.codec.fingerprint import model_fingerprint
from stlic.codec.image_io import read_image, write_image
from stlic.codec.memory import NotEnoughMemoryError, coding_memory

__all__ = [
    "BitstreamError", "Container", "parse_container", "write_container", "model_fingerprint",
    "compress_image", "decompress_image", "find_level_for_bpp", "RateSearchResult", "bits_per_pixel",
    "read_image", "write_image", "NotEnoughMemoryError", "coding_memory",
]
