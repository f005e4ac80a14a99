"""gradbalance: per-loss, per-module gradient-norm probing of PyTorch models.

Measures each loss's share of the gradient reaching each parameter group (ST-LIC, Table I),
derives loss coefficients that give target shares, and exports them into a training config.

Rooms by role: :mod:`gradbalance.probe` (what runs inside the user's backward),
:mod:`gradbalance.balancer` (the online Balancer, its settings and update laws),
:mod:`gradbalance.functional` (stateless math: derive, rebalance, target shares, the Balancer's solve), :mod:`gradbalance.report`
(tables, plots, the paper's reference), :mod:`gradbalance.io` (runs on disk, config export, atomic
writes), :mod:`gradbalance.targets` (the CLI's model plug-ins) and :mod:`gradbalance.integrations`
(Lightning, accelerate; imported only by name). Every name below is imported on first use
(PEP 562), so ``import gradbalance.io.atomic`` loads neither torch nor pandas.
"""
from gradbalance._lazy import install_moved as _install_moved, lazy_exports as _lazy_exports

_EXPORTS = {
    "Balancer": "gradbalance.balancer.online_balancer",
    "BalancerSpec": "gradbalance.balancer.spec",
    "ContributionTable": "gradbalance.report.table",
    "DerivedCoefficients": "gradbalance.functional.derive",
    "GradientProbe": "gradbalance.probe.gradient_probe",
    "GroupSpec": "gradbalance.probe.groups",
    "ParameterGroups": "gradbalance.probe.groups",
    "ProbeTarget": "gradbalance.targets.target",
    "Rebalanced": "gradbalance.functional.rebalance",
    "ShareCheck": "gradbalance.functional.rebalance",
    "StepStats": "gradbalance.probe.stats",
    "compare_shares": "gradbalance.functional.rebalance",
    "derive_coefficients": "gradbalance.functional.derive",
    "derive_from_norms": "gradbalance.functional.derive",
    "export_config": "gradbalance.io.export",
    "partition_parameters": "gradbalance.probe.groups",
    "rebalance": "gradbalance.functional.rebalance",
    "records_frame": "gradbalance.probe.stats",
    "resolve_target": "gradbalance.targets.target",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS)

# Old flat module paths (before the rooms, issue 19 item 9) -> where their names live now. They still
# import (no file: _lazy.MovedModules), each name with a DeprecationWarning naming its new module.
_PROBE = ("compiled_reach", "cosines", "distributed", "groups", "loss_weights", "optimizer_window", "per_loss",
          "preconditioned", "probe_inputs", "reachability", "stats")
_MOVED = {
    **{f"gradbalance.{name}": (f"gradbalance.probe.{name}",) for name in _PROBE},
    **{f"gradbalance.{name}": (f"gradbalance.functional.{name}",) for name in ("derive", "rebalance")},
    **{f"gradbalance.{name}": (f"gradbalance.report.{name}",) for name in ("plots", "reference", "scale_report", "table")},
    "gradbalance.run": ("gradbalance.io.run",),
    "gradbalance.record_checks": ("gradbalance.io.record_checks",),
    "gradbalance.export": ("gradbalance.io.export", "gradbalance.io.atomic"),
    "gradbalance.target": ("gradbalance.targets.target",),
    "gradbalance.examples": ("gradbalance.targets.examples",),
    "gradbalance.reprobe": ("gradbalance.targets.probe_loop",),
    "gradbalance.balance_spec": ("gradbalance.balancer.spec",),
    "gradbalance.update_laws": ("gradbalance.balancer.update_laws",),
    "gradbalance.balance_solve": ("gradbalance.functional.balance_solve",),
    "gradbalance.target_shares": ("gradbalance.functional.target_shares",),
    "gradbalance.balance_plots": ("gradbalance.report.balance_plots",),
}
_install_moved(_MOVED)

# The old module path gradbalance.rebalance (a shim) shares its name with the function rebalance.
# Loading a submodule binds its name on the package, so load the shim now (no file, nothing imported)
# and unbind it: the name then resolves to the function, however the shim is imported later.
__import__("gradbalance.rebalance")
del globals()["rebalance"]
