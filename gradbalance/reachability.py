"""Moved to :mod:`gradbalance.probe.reachability`; this path still imports, with a DeprecationWarning."""
from gradbalance._lazy import moved

__getattr__ = moved(__name__, "gradbalance.probe.reachability")
