"""Stateless math, in the torchmetrics manner of a functional core beside the stateful classes.

:mod:`~gradbalance.functional.derive` solves for the loss coefficients that give target shares;
:mod:`~gradbalance.functional.rebalance` re-measures and corrects them (the function ``rebalance``
is ``gradbalance.rebalance``; here the name is its module). Names import lazily.
"""
from gradbalance._lazy import lazy_exports as _lazy_exports

_EXPORTS = {
    "DerivedCoefficients": "gradbalance.functional.derive",
    "derive_coefficients": "gradbalance.functional.derive",
    "derive_from_norms": "gradbalance.functional.derive",
    "Rebalanced": "gradbalance.functional.rebalance",
    "ShareCheck": "gradbalance.functional.rebalance",
    "compare_shares": "gradbalance.functional.rebalance",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS)
