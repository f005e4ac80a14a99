"""Moved to :mod:`gradbalance.io.export` and :mod:`gradbalance.io.atomic` (``atomic_write``); this path
still imports, with a DeprecationWarning."""
from gradbalance._lazy import moved

__getattr__ = moved(__name__, "gradbalance.io.export", "gradbalance.io.atomic")
