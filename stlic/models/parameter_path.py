"""The entropy-parameter path of the codec runs in float64, so every device picks the same CDFs.

A symbol's CDF is chosen by its predicted scale (nearest entry of a 64-scale table, boundaries
~12% apart). In float32 the hyper-decoder and context model give scales that differ in their
last bits between CPU and CUDA or between thread counts (relative ~1e-6 after deep networks),
so over ~10^5..10^6 symbols some land on the other side of a boundary and the decoder picks
another CDF: a wrong image. CompressAI has the same problem (its issues #279, #309, #320).

The coding path (``compress`` / ``decompress`` / ``reconstruct``) therefore runs ``h_s`` and the
SCCTX model on float64 copies of their weights: cross-device differences shrink to ~1e-15
relative, and the chance that any symbol of a 2-megapixel image changes CDF to ~1e-8. The
symbol checksum of :mod:`stlic.entropy.rans_stream` turns that remaining chance into a clear
error. Training stays in float32; the bits are those of the float32 model to within the rare
symbol whose scale sits on a boundary (measured in ``reports/benchmarks/codec.md``).

Departure: ELIC / CompressAI run this path in float32 (and are not reproducible across devices).
"""
from __future__ import annotations

import copy
import weakref

import torch
import torch.nn as nn

#: dtype of the entropy-parameter path when coding
PARAMETER_DTYPE = torch.float64

_copies: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, nn.Module]]" = weakref.WeakKeyDictionary()


def _state_key(module: nn.Module) -> tuple:
    return tuple(
        (name, t.data_ptr(), t._version, t.dtype, str(t.device))
        for name, t in module.state_dict(keep_vars=True).items()
    )


def parameter_path_copy(module: nn.Module, dtype: torch.dtype = PARAMETER_DTYPE) -> nn.Module:
    """``module`` with its floating weights and buffers in ``dtype`` (an eval-mode copy, cached
    until any of the module's tensors changes; ``module`` itself when it already has ``dtype``)."""
    if all(t.dtype == dtype for t in module.parameters()):
        return module
    key = (_state_key(module), dtype)
    cached = _copies.get(module)
    if cached is not None and cached[0] == key:
        return cached[1]
    twin = copy.deepcopy(module).to(dtype).eval().requires_grad_(False)
    _copies[module] = (key, twin)
    return twin
