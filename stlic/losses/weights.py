"""Where the perceptual backbones' weight files come from, without ever downloading.

Resolution order for an ImageNet backbone (VGG-16, AlexNet as torchvision ships them):

1. an explicit path given by the caller;
2. the standard torch hub cache, ``$TORCH_HOME/hub/checkpoints/<file>`` (``torch.hub.get_dir()``),
   which is where ``torchvision.models.vgg16(weights=...)`` would have stored a download.

A missing file raises ``FileNotFoundError`` naming the file and where to put it; nothing here
falls back to random weights. The ST-LPIPS weights ship inside the ``stlpips-pytorch`` wheel.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor, nn

#: torchvision's file names for the ImageNet weights (``IMAGENET1K_V1``), as cached by torch hub
TORCHVISION_FILES = {
    "vgg16": "vgg16-397923af.pth",
    "alexnet": "alexnet-owt-7be5be79.pth",
}


def hub_checkpoint_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` (honours ``TORCH_HOME`` and ``torch.hub.set_dir``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_torchvision_weights(arch: str, path: str | os.PathLike | None = None) -> Path:
    """Path of torchvision's ImageNet weights for ``arch`` ("vgg16" | "alexnet").

    Raises:
        FileNotFoundError: the explicit ``path`` or the hub-cache file does not exist.
    """
    if arch not in TORCHVISION_FILES:
        raise ValueError(f"unknown backbone {arch!r}; expected one of {sorted(TORCHVISION_FILES)}")
    filename = TORCHVISION_FILES[arch]
    if path is not None:
        explicit = Path(path)
        if not explicit.is_file():
            raise FileNotFoundError(f"{arch} weight file {str(explicit)!r} does not exist")
        return explicit
    cached = hub_checkpoint_dir() / filename
    if not cached.is_file():
        raise FileNotFoundError(
            f"{arch} ImageNet weights {filename!r} not found at {str(cached)!r}. No download is "
            f"attempted: copy torchvision's {filename} into {str(cached.parent)!r} (or set "
            f"TORCH_HOME), or pass the file's path explicitly."
        )
    return cached


def stlpips_weights(net: str) -> Path:
    """The ST-LPIPS weight file shipped in the ``stlpips-pytorch`` wheel for ``net`` (vgg | alex)."""
    import importlib.util

    spec = importlib.util.find_spec("stlpips_pytorch")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("stlpips-pytorch is not installed: `pip install stlpips-pytorch`")
    path = Path(spec.origin).parent / "weights" / "vST0.0" / f"{net}_shift_tolerant.pth"
    if not path.is_file():
        raise FileNotFoundError(f"ST-LPIPS weight file {str(path)!r} missing from stlpips-pytorch")
    return path


def load_state_dict_file(path: str | os.PathLike) -> dict[str, Tensor]:
    """``torch.load(path, weights_only=True)`` on CPU, checked to be a flat tensor mapping."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{str(path)!r} is not a state_dict (a mapping of names to tensors)")
    return dict(state)


def load_exactly(
    module: nn.Module, state: Mapping[str, Tensor], source: str, assign: bool = False
) -> None:
    """``module.load_state_dict(state)`` that names every missing or unexpected key.

    Every parameter and buffer of ``module`` must be in ``state`` (so no layer stays random);
    a key may be absent only when it aliases a loaded tensor (one module registered twice).
    ``assign=True`` adopts the loaded tensors, for a module built on the meta device.
    """
    result = module.load_state_dict(state, strict=False, assign=assign)
    tensors = module.state_dict(keep_vars=True)
    loaded = {id(tensors[key]) for key in state if key in tensors}
    missing = [key for key in result.missing_keys if id(tensors[key]) not in loaded]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"weights from {source} do not match {type(module).__name__}: "
            f"missing {missing[:6]}, unexpected {result.unexpected_keys[:6]}"
        )


def torchvision_features_to_slices(
    state: Mapping[str, Tensor], slices: nn.Module
) -> dict[str, Tensor]:
    """Re-key torchvision ``features.<i>.<p>`` entries as ``slice<k>.<i>.<p>`` of ``slices``.

    ``slices`` holds ``slice1..sliceK`` Sequentials whose children are named by their index in
    torchvision's ``features`` (the layout of the ``lpips`` package). Classifier keys are dropped.
    """
    slice_of = {
        child: slice_name
        for slice_name, sequential in slices.named_children()
        for child, _ in sequential.named_children()
    }
    rekeyed = {}
    for key, value in state.items():
        prefix, _, rest = key.partition(".")
        index, _, param = rest.partition(".")
        if prefix == "features" and index in slice_of:
            rekeyed[f"{slice_of[index]}.{index}.{param}"] = value
    return rekeyed


def check_materialised(module: nn.Module, source: str) -> None:
    """Raise if a tensor of a meta-device-built ``module`` received no weights."""
    empty = [name for name, t in module.state_dict(keep_vars=True).items() if t.is_meta]
    if empty:
        raise ValueError(f"weights from {source} left {empty[:6]} of {type(module).__name__} unset")
