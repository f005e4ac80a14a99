"""The online Balancer: re-measures each loss's share every ``every`` steps and updates the coefficients.

:mod:`~gradbalance.balancer.online_balancer` holds the stateful class (moving averages, history,
hooks), :mod:`~gradbalance.balancer.spec` its one validated settings object (a config section is its
keywords) and :mod:`~gradbalance.balancer.update_laws` the replaceable update law; the stateless
solve lives in :mod:`gradbalance.functional.balance_solve`. Names import lazily.
"""
from gradbalance._lazy import lazy_exports as _lazy_exports

_EXPORTS = {
    "Balancer": "gradbalance.balancer.online_balancer",
    "BalancerSpec": "gradbalance.balancer.spec",
    "LAWS": "gradbalance.balancer.update_laws",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS)
