"""Run a probe target for N steps, optionally with its loss weights multiplied, and re-run a saved run.

:func:`run_target` is the loop of ``gradbalance probe``; :func:`remeasure` rebuilds the target of a
saved run from its ``run.json`` (model, config, preset, device, data, seed, batch and patch size,
``--option`` pairs)
and returns the :data:`gradbalance.functional.rebalance.MeasureFn` that re-probes it, same steps and window,
with every weight the target passes multiplied: weights ``m_l * w_lt`` (a weight drawn per batch,
like QVRF's rate, is drawn as before and then scaled), exactly what ``derive_coefficients`` predicts.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Optional

from gradbalance.probe.preconditioned import supports_preconditioning
from gradbalance.probe.gradient_probe import GradientProbe
from gradbalance.io.run import ProbeRun
from gradbalance.probe.stats import ADAM_WARMUP
from gradbalance.report.table import ContributionTable, past_warmup
from gradbalance.targets.target import ProbeTarget, make_target

#: run.json keys passed back to the target factory
TARGET_OPTIONS = ("config", "preset", "device", "data", "seed", "batch_size", "patch_size")


def run_target(target: ProbeTarget, steps: int, every: int, *, multipliers: Optional[Mapping[str, float]] = None,
               cosine: bool = False, progress: Optional[str] = None) -> GradientProbe:
    """Train ``target`` for ``steps`` steps through a :class:`GradientProbe`; weights times ``multipliers``."""
    optimizer = target.optimizer if supports_preconditioning(target.optimizer) else None
    probe = GradientProbe(target.model, target.groups, loss_order=target.loss_order, every=every,
                          optimizer=optimizer, scaler=getattr(target, "scaler", None), cosine=cosine,
                          ignore=getattr(target, "ignored_parameters", ()))
    scale = dict(multipliers or {})

    def backward(losses, weights):
        weights = {k: float(v) * scale.get(k, 1.0) for k, v in weights.items()}
        return probe.backward(losses, weights)

    iterator = range(steps)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc=progress, unit="step")
    try:
        for step in iterator:
            target.train_step(step, backward)
    finally:
        probe.remove_hooks()
    if not probe.history:
        raise ValueError("no step was probed; use --steps >= 1")
    return probe


def remeasure(run: ProbeRun, window: Optional[int], precond: bool, progress: bool = True):
    """A ``MeasureFn``: re-probe ``run``'s target with multiplied weights, return its table."""
    meta = run.metadata
    if not meta.get("model") or not meta.get("steps"):
        raise ValueError(f"{run.path}/run.json does not say which target and how many steps were probed; "
                         "re-measuring needs a run written by `gradbalance probe`")

    def measure(multipliers: Mapping[str, float]) -> ContributionTable:
        options = {k: meta.get(k) for k in TARGET_OPTIONS}
        options.update(meta.get("options") or {})  # the probe's --option KEY=VALUE pairs
        target = make_target(meta["model"], **options)
        label = f"re-probe {meta['model']}" if progress else None
        probe = run_target(target, int(meta["steps"]), int(meta.get("every") or 1), multipliers=multipliers,
                           progress=label)
        if precond:
            return past_warmup(lambda warmup: probe.precond_table(window, warmup=warmup), ADAM_WARMUP)
        return probe.table(window)

    return measure
