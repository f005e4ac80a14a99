"""Non-saturating GAN losses and the module that owns the discriminator (ST-LIC eq. 4-5).

Goodfellow et al., "Generative Adversarial Nets", NeurIPS 2014, non-saturating form, as in
HiFiC (Mentzer et al., NeurIPS 2020) and ST-LIC eq. 4-5, with D = sigmoid(logits) conditioned
on the quantised latent y_hat:

    L_D = 1/2 E[-log D(x, y)] + 1/2 E[-log(1 - D(x_hat, y))]
    L_G = E[-log D(x_hat, y)]

written on logits l for stability: -log sigmoid(l) = softplus(-l), -log(1 - sigmoid(l)) =
softplus(l). At the equilibrium D = 1/2 everywhere, so L_D = log 2 ~= 0.693.

No spectral normalisation and no gradient penalty: ST-LIC's point is that the instability of
perceptual training comes from imbalanced loss gradients on the refiner, which it fixes by
balancing the loss coefficients, not by constraining the discriminator.

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
    """One discriminator update: its loss and the mean D = sigmoid(logits) on each side."""

    loss: Tensor
    d_real: Tensor
    d_fake: Tensor


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

    def train_adv(self, fake: Tensor, real: Tensor, latent: Tensor) -> DiscriminatorStep:
        """One discriminator step on (real, fake) conditioned on ``latent`` (both detached)."""
        if fake.shape != real.shape:
            raise ValueError(f"fake {tuple(fake.shape)} and real {tuple(real.shape)} differ in shape")
        condition = latent.detach()
        real_logits = self.discriminator(real.detach(), condition)
        fake_logits = self.discriminator(fake.detach(), condition)
        loss = discriminator_loss(real_logits, fake_logits)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.discriminator.parameters(), self.grad_clip)
        self.optimizer.step()
        return DiscriminatorStep(
            loss.detach(), torch.sigmoid(real_logits).mean().detach(), torch.sigmoid(fake_logits).mean().detach()
        )

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
