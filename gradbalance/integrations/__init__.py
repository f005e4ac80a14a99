"""Integrations with training frameworks, each imported only by name (it needs its framework installed):

* :mod:`gradbalance.integrations.lightning`: ``GradBalanceCallback`` for PyTorch Lightning;
* :mod:`gradbalance.integrations.accelerate`: ``accelerated_backward`` for Hugging Face accelerate.
"""
