"""Non-saturating GAN losses and the module that owns the discriminator (ST-LIC eq. 4-5).

Goodfellow et al., "Generative Adversarial Nets", NeurIPS 2014, non-saturating form, as in
HiFiC (Mentzer et al., NeurIPS 2020) and ST-LIC eq. 4-5, with D = sigmoid(logits) conditioned
on the quantised latent y_hat:

    L_D = 1/2 E[-log D(x, y)] + 1/2 E[-log(1 - D(x_hat, y))]
    L_G = E[-log D(x_hat, y)]

written on logits l for stability: -log sigmoid(l) = softplus(-l), -log(1 - sigmoid(l)) =
softplus(l). At the equilibrium D = 1/2 everywhere, so L_D = log 2 ~= 0.693.

ST-LIC uses no spectral normalisation and no gradient penalty: its point is that the instability
of perceptual training comes from imbalanced loss gradients on the refiner, which it fixes by
balancing the loss coefficients, not by constraining the discriminator. For the ablation,
``train_adv(..., r1_weight=gamma)`` adds the R1 penalty on real images (Mescheder et al., "Which
Training Methods for GANs do actually Converge?", ICML 2018, eq. 9):

    R1 = gamma/2 E_x[ ||grad_x l(x, y)||^2 ]      (l: the logits, summed over patches)

:func:`discriminator_health` gives what tells a dormant discriminator from an equilibrium
(both read L_D = L_G = ln 2): mean logits, accuracy and the paired real-fake gap.

:class:`AdversarialLoss` follows audiocraft's ``AdversarialLoss``: it owns the discriminator
and its optimizer, so the training step is ``adv.train_adv(x_hat, x, y_hat)`` then
``adv.generator_loss(x_hat, y_hat)``.
"""
from __future__ import annotations

from typing import Callable, Iterable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .precision import upcast

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
_OPTIMIZER_KEY = "optimizer"


class DiscriminatorStep(NamedTuple):
    """One discriminator update: its loss L_D, the mean D = sigmoid(logits) on each side and
    :func:`discriminator_health`'s statistics (0-dim detached tensors; ``r1`` is the unweighted
    R1 penalty, 0 when not computed)."""

    loss: Tensor
    d_real: Tensor
    d_fake: Tensor
    real_logit: Tensor | None = None
    fake_logit: Tensor | None = None
    accuracy: Tensor | None = None
    gap: Tensor | None = None
    r1: Tensor | None = None


def discriminator_health(real_logits: Tensor, fake_logits: Tensor) -> dict[str, Tensor]:
    """Statistics of one (real, fake) pair of logit maps of the same images and latents.

    ``real_logit`` / ``fake_logit``: mean logits; ``accuracy``: the share of patches D classifies
    right, ``1/2 mean[l_real > 0] + 1/2 mean[l_fake < 0]``; ``gap``: the paired real-fake gap
    ``mean |sigmoid(l_real) - sigmoid(l_fake)|`` over patches (0 when D answers the same to x and x_hat).

    Example:
        >>> h = discriminator_health(torch.tensor([2.0, -1.0]), torch.tensor([-2.0, -1.0]))
        >>> float(h["accuracy"]), round(float(h["gap"]), 3)
        (0.75, 0.381)
    """
    if real_logits.shape != fake_logits.shape:
        raise ValueError(f"real {tuple(real_logits.shape)} and fake {tuple(fake_logits.shape)} logits differ in shape")
    real, fake = upcast(real_logits.detach()), upcast(fake_logits.detach())
    return {
        "real_logit": real.mean(), "fake_logit": fake.mean(),
        "accuracy": 0.5 * (real > 0).to(real.dtype).mean() + 0.5 * (fake < 0).to(real.dtype).mean(),
        "gap": (torch.sigmoid(real) - torch.sigmoid(fake)).abs().mean(),
    }


def r1_penalty(real_logits: Tensor, real: Tensor) -> Tensor:
    """``E_x ||grad_x sum(l(x))||^2`` (per image, then the batch mean); ``real`` must require grad.

    The graph is kept (``create_graph=True``) so the penalty trains D (Mescheder et al. 2018).
    """
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """L_D = 1/2 mean softplus(-l_real) + 1/2 mean softplus(l_fake)."""
    real_logits, fake_logits = upcast(real_logits), upcast(fake_logits)  # bf16 autocast logits: losses in fp32
    return 0.5 * F.softplus(-real_logits).mean() + 0.5 * F.softplus(fake_logits).mean()


def generator_loss(fake_logits: Tensor) -> Tensor:
    """L_G = mean softplus(-l_fake) = E[-log D(x_hat)] (non-saturating)."""
    return F.softplus(-upcast(fake_logits)).mean()


class AdversarialLoss(nn.Module):
    """Owns ``discriminator(image, latent) -> logits`` and the optimizer that trains it.

    Args:
        discriminator: any module mapping (image, latent) to logits (any shape).
        optimizer: an optimizer over the discriminator's parameters, or a factory called with
            them, e.g. ``lambda p: torch.optim.Adam(p, lr=1e-4)``.
        grad_clip: max gradient norm of the discriminator step (None: no clipping).

    ``state_dict()`` holds the discriminator's tensors and, under ``"optimizer"``, the
    optimizer's state, so ``load_state_dict`` resumes exactly.
    """

    def __init__(
        self,
        discriminator: nn.Module,
        optimizer: torch.optim.Optimizer | OptimizerFactory,
        grad_clip: float | None = None,
    ) -> None:
        super().__init__()
        if grad_clip is not None and grad_clip <= 0:
            raise ValueError(f"grad_clip must be positive or None, got {grad_clip}")
        self.discriminator = discriminator
        params = list(discriminator.parameters())
        if not params:
            raise ValueError("the discriminator has no parameters to train")
        if not isinstance(optimizer, torch.optim.Optimizer):
            optimizer = optimizer(params)
            if not isinstance(optimizer, torch.optim.Optimizer):
                raise TypeError(f"optimizer factory returned {type(optimizer).__name__}, not an Optimizer")
        owned = {id(p) for p in params}
        foreign = [p for group in optimizer.param_groups for p in group["params"] if id(p) not in owned]
        if foreign:
            raise ValueError(f"the optimizer holds {len(foreign)} tensors that are not discriminator parameters")
        self.optimizer = optimizer
        self.grad_clip = grad_clip

    def train_adv(self, fake: Tensor, real: Tensor, latent: Tensor, r1_weight: float = 0.0) -> DiscriminatorStep:
        """One discriminator step on (real, fake) conditioned on ``latent`` (both detached).

        Minimises ``L_D + r1_weight / 2 * R1`` (``r1_weight = 0``: no penalty, no double backward).
        The returned statistics are those of the logits before the update.
        """
        if fake.shape != real.shape:
            raise ValueError(f"fake {tuple(fake.shape)} and real {tuple(real.shape)} differ in shape")
        if not r1_weight >= 0:
            raise ValueError(f"r1_weight must be >= 0, got {r1_weight}")
        condition = latent.detach()
        real = real.detach().requires_grad_(r1_weight > 0)
        real_logits = self.discriminator(real, condition)
        fake_logits = self.discriminator(fake.detach(), condition)
        loss = discriminator_loss(real_logits, fake_logits)
        penalty = r1_penalty(real_logits, real) if r1_weight > 0 else loss.new_zeros(())
        self.optimizer.zero_grad(set_to_none=True)
        (loss + 0.5 * r1_weight * penalty if r1_weight > 0 else loss).backward()
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.discriminator.parameters(), self.grad_clip)
        self.optimizer.step()
        health = discriminator_health(real_logits, fake_logits)
        return DiscriminatorStep(
            loss.detach(), torch.sigmoid(real_logits).mean().detach(), torch.sigmoid(fake_logits).mean().detach(),
            r1=penalty.detach(), **health)

    def generator_loss(self, fake: Tensor, latent: Tensor) -> Tensor:
        """L_G = E[-log D(fake, latent)]; gradients reach ``fake`` and ``latent`` only.

        The discriminator's parameters are frozen during the call (their ``.grad`` is never
        written) and their ``requires_grad`` flags restored afterwards.
        """
        params = list(self.discriminator.parameters())
        flags = [p.requires_grad for p in params]
        try:
            for p in params:
                p.requires_grad_(False)
            return generator_loss(self.discriminator(fake, latent))
        finally:
            for p, flag in zip(params, flags):
                p.requires_grad_(flag)

    def forward(self, fake: Tensor, latent: Tensor) -> Tensor:
        return self.generator_loss(fake, latent)

    # torch's per-module (de)serialisation hooks: the optimizer's state rides along under
    # "<prefix>optimizer", as audiocraft's AdversarialLoss does.
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + _OPTIMIZER_KEY] = self.optimizer.state_dict()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        key = prefix + _OPTIMIZER_KEY
        if key in state_dict:
            self.optimizer.load_state_dict(state_dict.pop(key))
        elif strict:
            missing_keys.append(key)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
