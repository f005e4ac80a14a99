"""Typed outputs of the LALIC main network and the ST-LIC model.

Each output is a dataclass that also reads as a mapping of its fields, as CompressAI's protocol
expects (``out["x_hat"]``, ``out["likelihoods"]``, ``out["strings"]``, ``out["shape"]``; its
``eval_model`` even assigns ``out["x_hat"] = ...``). Keys are exactly the field names.
"""
from __future__ import annotations

import dataclasses
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Tuple

from torch import Tensor


class FieldMapping(MutableMapping):
    """Mapping view of a dataclass's fields: get and set existing fields, no new or deleted keys."""

    def _check_key(self, key: str) -> None:
        if key not in self._field_names():
            raise KeyError(f"{type(self).__name__} has no field {key!r} (fields: {', '.join(self._field_names())})")

    @classmethod
    def _field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def __getitem__(self, key: str) -> Any:
        self._check_key(key)
        return getattr(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        self._check_key(key)
        setattr(self, key, value)

    def __delitem__(self, key: str) -> None:
        raise TypeError(f"cannot delete field {key!r} of {type(self).__name__}")

    def __iter__(self) -> Iterator[str]:
        return iter(self._field_names())

    def __len__(self) -> int:
        return len(self._field_names())


@dataclass
class LALICOutput(FieldMapping):
    """Training / evaluation pass of the main network (CompressAI's ``{"x_hat", "likelihoods"}``)."""

    x_hat: Tensor
    likelihoods: Dict[str, Tensor]  # {"y": ..., "z": ...}
    y_hat: Tensor


@dataclass
class STLICOutput(FieldMapping):
    """``x_hat`` takes the distortion losses, ``x_refined`` the perceptual ones (ST-LIC Sec. III)."""

    x_hat: Tensor
    x_refined: Tensor
    likelihoods: Dict[str, Tensor]  # {"y": ..., "z": ...}
    y_hat: Tensor  # (B, M, H/16, W/16), the discriminator's condition


@dataclass
class CompressedImage(FieldMapping):
    """Strings and sizes of a batch of compressed images.

    ``strings = [y_strings, z_strings]``, each a list with one ``bytes`` per image (CompressAI's
    order). ``shape`` is the (h, w) of z; ``original_size`` the (H, W) of the input before
    padding to a multiple of 64; ``level`` the continuous QVRF rate level used.
    """

    strings: List[List[bytes]]
    shape: Tuple[int, int]
    level: float
    original_size: Tuple[int, int]

    @property
    def num_bytes(self) -> int:
        return sum(len(s) for per_image in self.strings for s in per_image)


@dataclass
class DecodedImage(FieldMapping):
    """Decoder output cropped to the original size: decoder image and refined image, in [0, 1]."""

    x_hat: Tensor
    x_refined: Tensor
