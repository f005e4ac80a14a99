"""What runs inside the user's backward: the probe, its parameter groups and its per-step records.

This is where ``torch.compile``, autocast and DDP must be right: per-loss gradients
(:mod:`~gradbalance.probe.per_loss`), reachability (:mod:`~gradbalance.probe.reachability`,
:mod:`~gradbalance.probe.compiled_reach`), learnable weights (:mod:`~gradbalance.probe.loss_weights`),
Adam-preconditioned norms (:mod:`~gradbalance.probe.preconditioned`,
:mod:`~gradbalance.probe.optimizer_window`), cosines and cross-rank averaging. Names import lazily.
"""
from gradbalance._lazy import lazy_exports as _lazy_exports

_EXPORTS = {
    "GradientProbe": "gradbalance.probe.gradient_probe",
    "GroupSpec": "gradbalance.probe.groups",
    "ParameterGroups": "gradbalance.probe.groups",
    "partition_parameters": "gradbalance.probe.groups",
    "StepStats": "gradbalance.probe.stats",
    "records_frame": "gradbalance.probe.stats",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS)
