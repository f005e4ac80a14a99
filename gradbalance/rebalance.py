"""Moved to :mod:`gradbalance.functional.rebalance`; this path still imports, with a DeprecationWarning."""
from gradbalance._lazy import moved

__getattr__ = moved(__name__, "gradbalance.functional.rebalance")
