"""Stateful metric accumulators (``update`` / ``compute`` / ``reset`` / ``merge`` / ``reduce``)."""
from stlic.evaluation.metrics.base import MeanMetric, SumStateMetric
from stlic.evaluation.metrics.fid import MIN_FID_PATCHES, FIDMetric, FIDResult, check_fid_sample_count
from stlic.evaluation.metrics.lpips import LPIPSMetric
from stlic.evaluation.metrics.ms_ssim import MSSSIMMetric
from stlic.evaluation.metrics.psnr import PSNRMetric, PSNRResult

__all__ = [
    "FIDMetric", "FIDResult", "LPIPSMetric", "MIN_FID_PATCHES", "MSSSIMMetric", "MeanMetric",
    "PSNRMetric", "PSNRResult", "SumStateMetric", "check_fid_sample_count",
]
