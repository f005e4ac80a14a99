"""Adversarial training dynamics (ST-LIC, Fig. 2): smoothed L_G and L_D against the step, and a
health panel of the discriminator's statistics beneath.

With ``D = sigmoid(logits)`` the non-saturating losses (``stlic.losses.adversarial``)

    L_D = 1/2 E[-log D(x)] + 1/2 E[-log(1 - D(x_ref))],   L_G = E[-log D(x_ref)]

both equal ``ln 2 ~= 0.693`` at the equilibrium ``D = 1/2``; the figure draws that line. Stable
training keeps both curves near it; a discriminator that wins drives L_D -> 0 and L_G up.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from stlic.training.gan_health import GAP_MIN, discriminator_records
from stlic.training.logging import read_log

EQUILIBRIUM = math.log(2.0)


class DynamicsCurves(NamedTuple):
    """Steps and the moving averages of L_G and L_D at those steps."""

    steps: np.ndarray
    generator: np.ndarray
    discriminator: np.ndarray


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` values: ``m_t = mean(v_{max(0, t-W+1)} .. v_t)``."""
    if window < 1:
        raise ValueError(f"smoothing window must be >= 1, got {window}")
    values = np.asarray(values, dtype=np.float64)
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    index = np.arange(1, len(values) + 1)
    start = np.maximum(index - window, 0)
    return (cumulative[index] - cumulative[start]) / (index - start)


def dynamics_curves(run_dir: str | Path, smooth: int = 1) -> DynamicsCurves:
    """L_G / L_D curves of a run's log (steps without a discriminator update are skipped)."""
    records = discriminator_records(read_log(run_dir))
    if not records:
        raise ValueError(f"the log of {str(run_dir)!r} has no step with a discriminator update")
    steps = np.array([r["step"] for r in records])
    return DynamicsCurves(steps, moving_average([r["gen_loss"] for r in records], smooth),
                          moving_average([r["disc_loss"] for r in records], smooth))


def health_curves(run_dir: str | Path, smooth: int = 1) -> dict[str, np.ndarray]:
    """Moving averages of the D statistics (:mod:`stlic.training.gan_health`) at the D steps:
    ``accuracy``, ``gap``, ``d_real``, ``d_fake`` (keys absent when the log has no such field)."""
    records = discriminator_records(read_log(run_dir))
    curves = {"steps": np.array([r["step"] for r in records])}
    for name, key in (("accuracy", "d_accuracy"), ("gap", "d_gap"), ("d_real", "d_real"), ("d_fake", "d_fake")):
        if records and all(r.get(key) is not None for r in records):
            curves[name] = moving_average([r[key] for r in records], smooth)
    return curves


def plot_dynamics(run_dir: str | Path, smooth: int = 1, out: str | Path | None = None) -> Path:
    """Draw Fig. 2 for ``run_dir`` into ``out`` (default ``RUN/dynamics.png``); returns the path.

    Top: L_G and L_D with the ln 2 line. Bottom (the health panel): D's accuracy, the paired gap
    ``mean |D(x) - D(x_ref)|`` and the mean D(x), D(x_ref), which tell an engaged discriminator
    from a dormant one when both losses sit at ln 2 (:mod:`stlic.training.gan_health`).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from stlic.evaluation.figures import save_figure

    curves = dynamics_curves(run_dir, smooth)
    health = health_curves(run_dir, smooth)
    figure, (axis, lower) = plt.subplots(2, 1, figsize=(6.4, 6.0), dpi=150, sharex=True,
                                         gridspec_kw={"height_ratios": (3, 2)})
    axis.plot(curves.steps, curves.generator, label=r"$L_G$ (generator)", color="tab:blue")
    axis.plot(curves.steps, curves.discriminator, label=r"$L_D$ (discriminator)", color="tab:orange")
    axis.axhline(EQUILIBRIUM, color="gray", linestyle="--", linewidth=1, label=r"$\ln 2 \approx 0.693$")
    axis.set_ylabel(f"loss (moving average, {smooth} steps)" if smooth > 1 else "loss")
    axis.set_title("Adversarial training dynamics")
    axis.legend(loc="best", frameon=False)
    axis.grid(alpha=0.3)
    styles = {"accuracy": ("D accuracy", "tab:green", "-"), "d_real": (r"$D(x)$", "tab:purple", ":"),
              "d_fake": (r"$D(\hat x)$", "tab:brown", ":")}
    for name, (label, color, line) in styles.items():
        if name in health:
            lower.plot(health["steps"], health[name], label=label, color=color, linestyle=line)
    lower.axhline(0.5, color="gray", linestyle="--", linewidth=1)
    lower.set_ylim(-0.02, 1.02)
    lower.set_xlabel("step")
    lower.set_ylabel("D accuracy, mean D")
    lower.legend(loc="upper left", frameon=False, ncol=3, fontsize="small")
    lower.grid(alpha=0.3)
    if "gap" in health:  # log scale: a dormant D's gap is 1e-4, an engaged one's 1e-1
        right = lower.twinx()
        right.plot(health["steps"], np.maximum(health["gap"], 1e-7), color="tab:red",
                   label=r"gap $|D(x) - D(\hat x)|$ (right)")
        right.axhline(GAP_MIN, color="tab:red", linestyle="--", linewidth=1, label=f"dormant below {GAP_MIN:g}")
        right.set_yscale("log")
        right.set_ylim(1e-6, 1.0)
        right.set_ylabel("paired gap (log)", color="tab:red")
        right.legend(loc="lower right", frameon=False, fontsize="small")
    path = Path(out) if out is not None else Path(run_dir) / "dynamics.png"
    return save_figure(figure, path)
