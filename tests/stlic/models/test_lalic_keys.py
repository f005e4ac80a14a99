"""Official LALIC checkpoint layout -> ours: round trip and prefix rules checked against the
layout CompressAI's latent codecs really produce."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from compressai.entropy_models import EntropyBottleneck
from compressai.latent_codecs import (
    ChannelGroupsLatentCodec,
    CheckerboardLatentCodec,
    GaussianConditionalLatentCodec,
    HyperLatentCodec,
    HyperpriorLatentCodec,
)

from stlic.models import LALIC, PRESETS
from stlic.models.lalic_keys import (
    BLOCK_RENAMES,
    convert_lalic_state_dict,
    load_lalic_state_dict,
    official_to_ours,
    ours_to_official,
)


@pytest.fixture(scope="module")
def tiny_main() -> LALIC:
    torch.manual_seed(0)
    main = LALIC(PRESETS["tiny"])
    main.update()
    return main


def _official_layout(main: LALIC) -> dict[str, torch.Tensor]:
    """A synthetic official state dict: our tensors under official names, plus the official
    aliases (shared h_a / h_s), per-group Gaussian CDF tables and fused OmniShift kernels."""
    official = {}
    for key, value in main.state_dict().items():
        name = ours_to_official(key)
        if name is not None:
            official[name] = value.clone()
            if name.startswith(("h_a.", "h_s.")):
                official["latent_codec.hyper." + name] = value.clone()
            if name.endswith("omni_shift.conv5x5.weight"):
                official[name.replace("conv5x5.weight", "conv5x5_reparam.weight")] = value.clone()
    for k in range(len(main.entropy_model.groups)):
        prefix = f"latent_codec.y.latent_codec.y{k}.y.gaussian_conditional."
        for buffer, value in main.entropy_model.gaussian_conditional.state_dict().items():
            official[prefix + buffer] = value.clone()
    return official


def test_round_trip_through_the_official_layout(tiny_main):
    official = _official_layout(tiny_main)
    assert any(".att.omni_shift." in key for key in official)  # really in official naming
    assert not any(".spatial_mix." in key for key in official)
    torch.manual_seed(1)
    fresh = LALIC(PRESETS["tiny"])
    report = load_lalic_state_dict(fresh, {"state_dict": {"module." + k: v for k, v in official.items()}})
    assert report.unexpected == []
    assert report.missing == ["entropy_model.gain.log_gains"]  # LALIC has no QVRF gains
    assert len(report.aliases) > 0 and len(report.skipped) > 0
    # official weights compute the official kernel's Bi-WKV
    assert report.wkv_mode == "kernel"
    assert {m.wkv_mode for m in fresh.modules() if hasattr(m, "wkv_mode")} == {"kernel"}
    source, loaded = tiny_main.state_dict(), fresh.state_dict()
    for key in source:
        if key.startswith("entropy_model.gain") or key.startswith("entropy_model.gaussian_conditional"):
            continue
        assert torch.equal(source[key], loaded[key]), key


def test_block_renames_apply_inside_blocks_only():
    assert official_to_ours("g_a.1.att.omni_shift.alpha") == "g_a.1.spatial_mix.shift.alpha"
    assert official_to_ours("g_s.3.ffn.key.weight") == "g_s.3.channel_mix.key.weight"
    assert official_to_ours("h_a.1.ln2.bias") == "h_a.1.norm2.bias"
    assert (official_to_ours("latent_codec.y.latent_codec.y3.entropy_parameters.2.norm.weight")
            == "entropy_model.param_aggregation.3.2.norm.weight")
    assert official_to_ours("latent_codec.hyper.h_a.0.weight") is None  # alias
    assert official_to_ours("g_a.1.att.omni_shift.conv5x5_reparam.weight") is None  # derived
    assert set(BLOCK_RENAMES.values()).isdisjoint(BLOCK_RENAMES)


def test_prefix_rules_cover_compressai_latent_codec_layout(tiny_main):
    """Rebuild the official entropy-model tree from CompressAI's latent codecs (around our own
    submodules) and check that every key it produces maps onto a key of ours."""
    em = tiny_main.entropy_model
    codec = HyperpriorLatentCodec(latent_codec={
        "y": ChannelGroupsLatentCodec(
            groups=list(em.groups),
            channel_context=dict(em.channel_context.items()),
            latent_codec={
                f"y{k}": CheckerboardLatentCodec(
                    latent_codec={"y": GaussianConditionalLatentCodec(quantizer="ste")},
                    context_prediction=em.spatial_context[k],
                    entropy_parameters=em.param_aggregation[k],
                )
                for k in range(len(em.groups))
            },
        ),
        "hyper": HyperLatentCodec(
            entropy_bottleneck=EntropyBottleneck(PRESETS["tiny"].hyper_channels[1]),
            h_a=tiny_main.h_a, h_s=tiny_main.h_s, quantizer="ste",
        ),
    })
    official = nn.Module()
    for name in ("g_a", "g_s", "h_a", "h_s"):
        setattr(official, name, getattr(tiny_main, name))
    official.latent_codec = codec
    converted, report = convert_lalic_state_dict(official.state_dict())
    assert report.unexpected == []
    ours = set(tiny_main.state_dict())
    assert set(converted) <= ours
    assert ours - set(converted) == {"entropy_model.gain.log_gains"} | {
        k for k in ours if k.startswith("entropy_model.gaussian_conditional.")
    }


def test_shape_mismatch_names_the_keys(tiny_main):
    official = _official_layout(tiny_main)
    official["g_a.0.weight"] = torch.zeros(3, 3, 5, 5)
    with pytest.raises(ValueError, match=r"g_a\.0\.weight.*matching preset"):
        load_lalic_state_dict(LALIC(PRESETS["tiny"]), official)


def test_unknown_keys_are_reported_not_dropped(tiny_main):
    official = _official_layout(tiny_main)
    official["some_new_head.weight"] = torch.zeros(1)
    report = load_lalic_state_dict(LALIC(PRESETS["tiny"]), official)
    assert report.unexpected == ["some_new_head.weight"]
