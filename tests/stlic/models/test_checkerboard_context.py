"""Checkerboard masks, the masked context conv, and causality of the SCCTX walk (what the
decoder can know at each pass)."""
from __future__ import annotations

import pytest
import torch
from compressai.layers import CheckerboardMaskedConv2d as CompressAIMaskedConv

from stlic.entropy import SCCTXEntropyModel
from stlic.entropy.latent_coders import RoundingQuantizer
from stlic.layers.checkerboard import ANCHOR, NON_ANCHOR, CheckerboardMaskedConv2d, checkerboard_mask


def test_masks_partition_the_grid():
    anchors, others = checkerboard_mask(5, 6, ANCHOR), checkerboard_mask(5, 6, NON_ANCHOR)
    assert torch.equal(anchors ^ others, torch.ones_like(anchors))
    assert anchors[0, 0, 0, 0] and anchors[0, 0, 1, 1] and not anchors[0, 0, 0, 1]
    with pytest.raises(ValueError, match="ANCHOR"):
        checkerboard_mask(2, 2, 2)


def test_mask_equals_compressai_and_hides_non_anchors():
    conv = CheckerboardMaskedConv2d(3, 4, 5)
    reference = CompressAIMaskedConv(3, 4, kernel_size=5, padding=2)
    assert torch.equal(conv.mask, reference.mask)
    reference.weight.data.copy_(conv.weight.data)
    reference.bias.data.copy_(conv.bias.data)
    x = torch.randn(2, 3, 8, 10)
    torch.testing.assert_close(conv(x), reference(x))
    # at non-anchor outputs only anchor inputs matter
    non_anchor = checkerboard_mask(8, 10, NON_ANCHOR)
    changed = x + torch.randn_like(x) * non_anchor
    assert torch.equal(torch.where(non_anchor, conv(changed), 0), torch.where(non_anchor, conv(x), 0))
    with pytest.raises(ValueError, match="odd kernel"):
        CheckerboardMaskedConv2d(1, 1, 4)


def test_parameters_never_depend_on_latents_not_yet_decoded():
    """Perturb y at group k's non-anchors: earlier groups and group k's anchors keep their
    Gaussian parameters (only later positions may change)."""
    torch.manual_seed(0)
    groups = (2, 3, 4)
    model = SCCTXEntropyModel(
        groups, 8, (1.0, 2.0), context_blocks=1, context_hidden_rate=2, aggregation_min_channels=8
    ).eval()
    hyper = torch.randn(1, 8, 6, 6)
    y = 3 * torch.randn(1, sum(groups), 6, 6)
    gain = model.gain(0.0)

    def params(latent):
        with torch.no_grad():
            return model.run(hyper, RoundingQuantizer(tuple(latent.split(groups, 1)), gain))

    base = params(y)
    non_anchor = checkerboard_mask(6, 6, NON_ANCHOR)
    anchor = ~non_anchor
    for k, start in enumerate((0, 2, 5)):
        perturbed = y.clone()
        perturbed[:, start:start + groups[k]] += 5 * non_anchor
        out = params(perturbed)
        for field in ("scales", "means"):
            before, after = getattr(base, field), getattr(out, field)
            assert torch.equal(before[:, :start], after[:, :start]), (k, field)
            group_before = before[:, start:start + groups[k]]
            group_after = after[:, start:start + groups[k]]
            assert torch.equal(torch.where(anchor, group_before, 0), torch.where(anchor, group_after, 0))
            assert torch.equal(group_before, group_after)  # the pass's own values are not context
        if k < len(groups) - 1:
            assert not torch.equal(base.scales[:, start + groups[k]:], out.scales[:, start + groups[k]:])
