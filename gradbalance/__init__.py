"""gradbalance: per-loss, per-module gradient-norm probing of PyTorch models.

Measures each loss's share of the gradient reaching each parameter group (ST-LIC, Table I),
derives loss coefficients that give target shares, and exports them into a training config.
"""
from gradbalance.balance_spec import BalancerSpec
from gradbalance.balancer import Balancer
from gradbalance.derive import DerivedCoefficients, derive_coefficients, derive_from_norms
from gradbalance.export import export_config
from gradbalance.groups import GroupSpec, ParameterGroups, partition_parameters
from gradbalance.probe import GradientProbe
from gradbalance.rebalance import Rebalanced, ShareCheck, compare_shares, rebalance
from gradbalance.stats import StepStats, records_frame
from gradbalance.table import ContributionTable
from gradbalance.target import ProbeTarget, resolve_target

__all__ = [
    "Balancer", "BalancerSpec", "ContributionTable", "DerivedCoefficients", "GradientProbe", "GroupSpec", "ParameterGroups",
    "ProbeTarget", "Rebalanced", "ShareCheck", "StepStats", "compare_shares", "derive_coefficients",
    "derive_from_norms", "export_config", "partition_parameters", "rebalance", "records_frame", "resolve_target",
]
