"""Typed result of one training step (:meth:`STLICSolver.run_step`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from stlic.training.config import LOSS_NAMES

#: discriminator statistics of a step (stlic.losses.adversarial.discriminator_health, plus the R1
#: penalty), logged as ``d_<name>``
DISCRIMINATOR_HEALTH = ("real_logit", "fake_logit", "accuracy", "gap", "r1")


@dataclass(frozen=True)
class StepOutput:
    """Scalars of one step, averaged over DDP ranks.

    ``losses`` are the six unweighted losses (Table I rows), ``weights`` their coefficients
    (``weights["rate"]`` is this batch's lambda), ``total = sum(weights[k] * losses[k])``.
    ``d_real`` / ``d_fake`` are the mean discriminator probabilities D(x) and D(x_ref) and
    ``disc_loss`` L_D; all three are ``None`` while the adversarial warm-up skips the D step.
    ``discriminator`` holds the :data:`DISCRIMINATOR_HEALTH` statistics of that D step (mean
    logits, accuracy, paired gap ``mean |D(x) - D(x_ref)|``, unweighted R1), logged as ``d_<name>``.
    """

    step: int
    losses: dict[str, float]
    weights: dict[str, float]
    total: float
    lambda_rate: float
    level: float
    bpp: float
    psnr_decoded: float
    psnr_refined: float
    gen_loss: float
    disc_loss: Optional[float]
    d_real: Optional[float]
    d_fake: Optional[float]
    grad_norm: float
    lr: float
    balance: Optional[dict[str, float]] = None  # balancer/... scalars (stlic.training.balancing)
    discriminator: Optional[dict[str, float]] = None

    def record(self) -> dict[str, float | int | None]:
        """Flat dict for the JSONL log and TensorBoard (``loss/<name>``, ``weighted/<name>``)."""
        flat: dict[str, float | int | None] = {
            key: getattr(self, key) for key in (
                "step", "total", "lambda_rate", "level", "bpp", "psnr_decoded", "psnr_refined",
                "gen_loss", "disc_loss", "d_real", "d_fake", "grad_norm", "lr")
        }
        for name in DISCRIMINATOR_HEALTH:
            flat[f"d_{name}"] = (self.discriminator or {}).get(name)
        for name in LOSS_NAMES:
            flat[f"loss/{name}"] = self.losses[name]
            flat[f"weighted/{name}"] = self.weights[name] * self.losses[name]
        flat.update(self.balance or {})
        return flat
