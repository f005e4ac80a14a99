"""Tables and plots of probed shares, and the paper's reference shares beside them.

The only room that imports matplotlib (:mod:`~gradbalance.report.plots`, on first use of a plot).
Names import lazily, so ``gradbalance.report.table`` does not load matplotlib.
"""
from gradbalance._lazy import lazy_exports as _lazy_exports

_EXPORTS = {
    "ContributionTable": "gradbalance.report.table",
    "WarmupOnlyError": "gradbalance.report.table",
    "ReferenceShares": "gradbalance.report.reference",
    "comparison_markdown": "gradbalance.report.reference",
    "describe_scale": "gradbalance.report.scale_report",
    "plot_heatmap": "gradbalance.report.plots",
    "plot_shares_over_steps": "gradbalance.report.plots",
    "save_plots": "gradbalance.report.plots",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS)
