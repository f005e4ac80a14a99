"""Official LALIC checkpoint keys -> ``STLIC.main`` keys.

The official model (Feng et al., CVPR 2025) subclasses CompressAI's ``Elic2022Official`` and
stores its entropy model as CompressAI latent codecs. Its state_dict maps onto ``LALIC``
(``model.main``) by these prefix rules (``<k>`` = channel group index)::

    official                                           ours (model.main)
    g_a.<i>. / g_s.<i>. / h_a.<i>. / h_s.<i>.          same (same Sequential order)
    latent_codec.hyper.h_a.* / .h_s.*                  alias of h_a.* / h_s.* (shared module)
    latent_codec.hyper.entropy_bottleneck.             entropy_bottleneck.
    latent_codec.y.channel_context.y<k>.               entropy_model.channel_context.y<k>.
    latent_codec.y.latent_codec.y<k>.context_prediction.   entropy_model.spatial_context.<k>.
    latent_codec.y.latent_codec.y<k>.entropy_parameters.   entropy_model.param_aggregation.<k>.
    latent_codec.y.latent_codec.y<k>.y.gaussian_conditional.  skipped: CDF tables, rebuilt by update()

and, inside every Bi-RWKV block, these module renames::

    ln1 -> norm1    ln2 -> norm2    att -> spatial_mix    ffn -> channel_mix    omni_shift -> shift
    omni_shift.conv5x5_reparam.weight   skipped: ours fuses the OmniShift kernel on demand

The official weights were trained with the official Bi-WKV CUDA kernel, which computes a
different function from the paper's formula (``stlic.layers.wkv``): ``load_lalic_state_dict``
switches every Bi-WKV of the model to ``mode="kernel"`` so the loaded network computes what
its weights were trained for (``KeyMapReport.wkv_mode``).

Not in the official model (it has fixed rate): ``entropy_model.gain.log_gains`` (QVRF gains)
stays as initialised and is reported under ``missing``. A ``module.`` prefix (DataParallel) and a
``{"state_dict": ...}`` wrapper are accepted. Call ``model.update(force=True)`` after loading.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

import torch.nn as nn
from torch import Tensor

from stlic.layers.rwkv import set_wkv_mode

#: (official prefix, our prefix); ``{k}`` is a channel-group index
PREFIX_RULES: tuple[tuple[str, str], ...] = (
    *((f"{name}.", f"{name}.") for name in ("g_a", "g_s", "h_a", "h_s")),
    ("latent_codec.hyper.entropy_bottleneck.", "entropy_bottleneck."),
    ("latent_codec.y.channel_context.y{k}.", "entropy_model.channel_context.y{k}."),
    ("latent_codec.y.latent_codec.y{k}.context_prediction.", "entropy_model.spatial_context.{k}."),
    ("latent_codec.y.latent_codec.y{k}.entropy_parameters.", "entropy_model.param_aggregation.{k}."),
)
#: official keys that duplicate a tensor mapped by another key (the shared hyper transforms)
ALIAS_PATTERN = re.compile(r"^latent_codec\.hyper\.(h_a|h_s)\.")
#: official keys of derived tensors that our modules rebuild (CDF tables, fused OmniShift kernel)
SKIP_PATTERN = re.compile(r"(^latent_codec\.y\.latent_codec\.y\d+\.y\.gaussian_conditional\.|conv5x5_reparam\.)")
#: our keys that no checkpoint needs to provide (the shared GaussianConditional of y)
REBUILT_PREFIX = "entropy_model.gaussian_conditional."
#: module renames inside Bi-RWKV blocks, official -> ours
BLOCK_RENAMES = {"ln1": "norm1", "ln2": "norm2", "att": "spatial_mix", "ffn": "channel_mix", "omni_shift": "shift"}


def _prefix_regex(template: str) -> re.Pattern[str]:
    return re.compile("^" + re.escape(template).replace(re.escape("{k}"), r"(?P<k>\d+)"))


def _translate(key: str, source: int, renames: Mapping[str, str]) -> str | None:
    """Rewrite ``key`` from side ``source`` (0 official, 1 ours) of PREFIX_RULES to the other side."""
    for rule in PREFIX_RULES:
        match = _prefix_regex(rule[source]).match(key)
        if match:
            head = rule[1 - source].format(**match.groupdict())
            return head + ".".join(renames.get(part, part) for part in key[match.end():].split("."))
    return None


def official_to_ours(key: str) -> str | None:
    """Our ``model.main`` key for an official LALIC key; None for aliases, skipped or unknown keys."""
    if ALIAS_PATTERN.match(key) or SKIP_PATTERN.search(key):
        return None
    return _translate(key, 0, BLOCK_RENAMES)


def ours_to_official(key: str) -> str | None:
    """Inverse of ``official_to_ours`` (None for keys the official model does not have)."""
    if key.startswith(("entropy_model.gain.", REBUILT_PREFIX)):
        return None
    return _translate(key, 1, {v: k for k, v in BLOCK_RENAMES.items()})


@dataclass
class KeyMapReport:
    """What ``load_lalic_state_dict`` did with each key."""

    mapped: dict[str, str] = field(default_factory=dict)  # official -> ours
    aliases: list[str] = field(default_factory=list)  # duplicates of mapped tensors
    skipped: list[str] = field(default_factory=list)  # derived tensors we rebuild
    unexpected: list[str] = field(default_factory=list)  # official keys no rule maps
    missing: list[str] = field(default_factory=list)  # our keys left as initialised (QVRF gains)
    wkv_mode: str = "paper"  # Bi-WKV mode the model was set to ("kernel" after loading)


def _unwrap(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = state_dict["state_dict"]
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}


def convert_lalic_state_dict(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], KeyMapReport]:
    """Rename an official LALIC state_dict to ``model.main`` keys; the report lists the rest."""
    report = KeyMapReport()
    converted: dict[str, Tensor] = {}
    for key, value in _unwrap(state_dict).items():
        ours = official_to_ours(key)
        if ours is not None:
            converted[ours] = value
            report.mapped[key] = ours
        elif ALIAS_PATTERN.match(key):
            report.aliases.append(key)
        elif SKIP_PATTERN.search(key):
            report.skipped.append(key)
        else:
            report.unexpected.append(key)
    return converted, report


def load_lalic_state_dict(main: nn.Module, state_dict: Mapping[str, Tensor]) -> KeyMapReport:
    """Load an official LALIC checkpoint into ``model.main``; returns which keys mapped / are missing.

    A mapped tensor whose shape differs from ours raises a ValueError naming both keys (wrong
    preset); unmapped official keys are reported, never silently dropped. Every Bi-WKV of
    ``main`` is set to the official kernel's function (``mode="kernel"``).
    """
    converted, report = convert_lalic_state_dict(state_dict)
    own = main.state_dict()
    for official, ours in report.mapped.items():
        if ours not in own:
            raise ValueError(f"official key {official!r} maps to {ours!r}, which this model does not have")
        # CDF tables change size after update(); everything else must match the preset
        if own[ours].shape != converted[ours].shape and not ours.split(".")[-1].startswith("_"):
            raise ValueError(
                f"shape mismatch: official {official!r} {tuple(converted[ours].shape)} vs ours {ours!r} "
                f"{tuple(own[ours].shape)}; is the model built with the matching preset?"
            )
    result = main.load_state_dict(converted, strict=False)
    # our shared Gaussian's tables and constant bounds are rebuilt by update(), not loaded
    report.missing = sorted(k for k in result.missing_keys if not k.startswith(REBUILT_PREFIX))
    set_wkv_mode(main, "kernel")
    report.wkv_mode = "kernel"
    return report
