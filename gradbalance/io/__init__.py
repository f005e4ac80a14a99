"""Files: probe runs on disk (:mod:`~gradbalance.io.run`), coefficients exported into a training
YAML (:mod:`~gradbalance.io.export`) and atomic writes (:mod:`~gradbalance.io.atomic`).

Imports nothing else of gradbalance at run time (annotations only), so a caller that needs an atomic
write loads neither torch nor the probe; import from the submodules.
"""
