"""LPIPS for evaluation: the training loss's network (:class:`stlic.losses.lpips.LPIPSLoss`),
wrapped in an :class:`~stlic.evaluation.metrics.LPIPSMetric` that carries the variant's name.

The offline default is ST-LPIPS(vgg) (``stlpips-pytorch``'s shipped weights). ``source="lpips"``
gives the original LPIPS and needs the torchvision ImageNet backbone file (hub cache or
``weights_path``); a missing file raises FileNotFoundError naming it. Papers differ in the
variant (LPIPS-Alex, LPIPS-VGG, ST-LPIPS), so the table headers print ``metric.name``.
"""
from __future__ import annotations

import os

from stlic.evaluation.metrics.lpips import LPIPSMetric


def make_lpips_metric(
    net: str = "vgg", source: str = "stlpips", weights_path: str | os.PathLike | None = None
) -> LPIPSMetric:
    """An LPIPS accumulator named after its variant, e.g. ``"ST-LPIPS(vgg)"`` or ``"LPIPS(alex)"``."""
    from stlic.losses.lpips import LPIPSLoss

    network = LPIPSLoss(net=net, source=source, weights_path=weights_path)  # type: ignore[arg-type]
    return LPIPSMetric(network.per_image, name=network.metric_name,
                       features=network.taps, distance_from_features=network.distance_from_taps)
