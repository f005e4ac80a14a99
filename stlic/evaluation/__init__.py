"""Evaluation of ST-LIC checkpoints: metrics (functional + stateful), FID/256, `stlic eval`,
RD curves / BD-rate (`stlic rd`), Table III and visual-comparison figures.

Submodules are imported on demand so ``import stlic.evaluation.functional`` stays light.
"""
