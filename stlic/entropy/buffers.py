"""Loading CompressAI entropy models whose CDF buffers change size after ``update()``."""
from __future__ import annotations

from typing import Mapping

from compressai.entropy_models import EntropyModel
from torch import Tensor

CDF_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length")


def resize_cdf_buffers(model: EntropyModel, prefix: str, state_dict: Mapping[str, Tensor]) -> None:
    """Resize ``model``'s CDF buffers to the shapes stored under ``prefix`` in ``state_dict``.

    Call from a parent's ``_load_from_state_dict`` (it runs before the children load), so a
    checkpoint saved after ``update()`` loads into a fresh model and vice versa.
    """
    names = [*CDF_BUFFERS, *(("scale_table",) if hasattr(model, "scale_table") else ())]
    for name in names:
        key = prefix + name
        if key in state_dict:
            buffer = getattr(model, name)
            buffer.resize_(state_dict[key].shape)
