"""gradbalance: per-loss, per-module gradient-norm probing of PyTorch models.

Measures each loss's share of the gradient reaching each parameter group (ST-LIC, Table I),
derives loss coefficients that give target shares, and exports them into a training config.
"""
from gradbalance.balancer import Balancer
from gradbalance.derive import DerivedCoefficients, derive_coefficients
from gradbalance.export import export_config
from gradbalance.groups import GroupSpec, ParameterGroups, partition_parameters
from gradbalance.probe import GradientProbe
from gradbalance.stats import StepStats, records_frame
from gradbalance.table import ContributionTable
from gradbalance.target import ProbeTarget, resolve_target

__all__ = [
    "Balancer", "ContributionTable", "DerivedCoefficients", "GradientProbe", "GroupSpec", "ParameterGroups",
    "ProbeTarget", "StepStats", "derive_coefficients", "export_config", "partition_parameters",
    "records_frame", "resolve_target",
]
