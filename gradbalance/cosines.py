"""Moved to :mod:`gradbalance.probe.cosines`; this path still imports, with a DeprecationWarning."""
from gradbalance._lazy import moved

__getattr__ = moved(__name__, "gradbalance.probe.cosines")
