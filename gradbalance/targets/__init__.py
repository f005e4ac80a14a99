"""The CLI's model plug-ins: the :class:`~gradbalance.targets.target.ProbeTarget` protocol, their
resolution through the ``gradbalance.targets`` entry points, the bundled example target and the
probe loop that runs one (:mod:`~gradbalance.targets.probe_loop`). Names import lazily.
"""
from gradbalance._lazy import lazy_exports as _lazy_exports

_EXPORTS = {
    "ProbeTarget": "gradbalance.targets.target",
    "available_targets": "gradbalance.targets.target",
    "make_target": "gradbalance.targets.target",
    "resolve_target": "gradbalance.targets.target",
    "make_example_target": "gradbalance.targets.examples",
    "remeasure": "gradbalance.targets.probe_loop",
    "run_target": "gradbalance.targets.probe_loop",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS)
