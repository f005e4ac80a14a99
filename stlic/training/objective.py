"""The ST-LIC training objective: six unweighted losses and their weights (Table II).

    L = lambda * R + l2 * MSE(x, x_hat) + l1 * L1(x, x_hat)
        + lpips * LPIPS(x, x_ref) + wasserstein * WD(x, x_ref) + adversarial * L_G(x_ref | y_hat)

``x_hat`` is the LALIC decoder output, ``x_ref`` the UNet refiner's: distortion losses train the
codec only (unless ``refined_distortion`` moves a share of them onto ``x_ref``, an ablation), the
perceptual ones reach the refiner and, through ``x_hat``, the codec. ``R`` is the estimated bits per pixel and ``lambda`` the rate coefficient drawn for the batch. The latent
condition of the discriminator is detached (HiFiC, Mentzer et al., NeurIPS 2020).
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from stlic.training.config import LOSS_NAMES, LossWeights, PerceptualConfig


class STLICObjective(nn.Module):
    """Computes ``{name: unweighted loss}`` for the names of :data:`LOSS_NAMES`.

    Args:
        weights: Table II coefficients (``rate`` is the lambda range, unused here).
        perceptual: LPIPS / Wasserstein distortion settings.
        adversarial: an :class:`stlic.losses.AdversarialLoss` (owns the discriminator).
        perceptual_on: False for rate-distortion pretraining (phase "rd"): LPIPS, Wasserstein
            distortion and L_G are not built and read as 0.
        refined_distortion: the share ``s`` of L1/L2 measured on the refined output,
            ``l2 = (1 - s) MSE(x, x_hat) + s MSE(x, x_ref)`` (``TrainConfig.refined_distortion``;
            0, the paper's, measures them on ``x_hat`` alone).
    """

    def __init__(self, weights: LossWeights, perceptual: PerceptualConfig, adversarial: nn.Module,
                 perceptual_on: bool = True, refined_distortion: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= refined_distortion <= 1.0:
            raise ValueError(f"refined_distortion: must be in [0, 1], got {refined_distortion!r}")
        self.refined_distortion = float(refined_distortion)
        from stlic.losses import L1Loss, LPIPSLoss, MSELoss, PerceptualLosses, RateLoss, WassersteinDistortion

        self.coefficients = weights
        self.rate = RateLoss()
        self.l2, self.l1 = MSELoss(), L1Loss()
        self.perceptual_on = perceptual_on
        self.adversarial = adversarial
        if not perceptual_on:
            return
        lpips = LPIPSLoss(net=perceptual.lpips_net, source=perceptual.lpips_source, weights_path=perceptual.lpips_weights)
        options = {"log2_sigma": perceptual.wasserstein_log2_sigma, "num_scales": perceptual.wasserstein_num_scales,
                   "padding": perceptual.wasserstein_padding}
        wasserstein = WassersteinDistortion(weights_path=perceptual.vgg_weights, vgg_backbone=perceptual.vgg_backbone,
                                            **{k: v for k, v in options.items() if v is not None})
        self.perceptual = PerceptualLosses(lpips, wasserstein)  # one VGG pass per image when shared

    def forward(self, x: Tensor, output) -> dict[str, Tensor]:
        """Unweighted losses of one forward pass ``output`` (an STLICOutput) of batch ``x``.

        Rate, L1 and L2 are computed in float32 with autocast off. Under an ambient autocast
        (``precision: bf16``) the VGG trunk and the discriminator run in its dtype, while LPIPS'
        normalisation, the Wasserstein statistics and the GAN losses read float32 values.
        """
        x_hat, x_refined = output.x_hat.float(), output.x_refined.float()
        num_pixels = x.shape[0] * x.shape[-2] * x.shape[-1]
        s = self.refined_distortion if self.perceptual_on else 0.0
        with torch.autocast(x.device.type, enabled=False):
            losses = {
                "rate": self.rate({k: v.float() for k, v in output.likelihoods.items()}, num_pixels),
                "l2": self._mix(self.l2, x_hat, x_refined, x, s),
                "l1": self._mix(self.l1, x_hat, x_refined, x, s),
            }
        if not self.perceptual_on:
            zero = x_hat.new_zeros(())
            return {**losses, "lpips": zero, "wasserstein": zero, "adversarial": zero}
        return {
            **losses,
            **self.perceptual(x_refined, x)._asdict(),  # lpips, wasserstein
            "adversarial": self.adversarial.generator_loss(x_refined, output.y_hat.detach().float()),
        }

    @staticmethod
    def _mix(loss: nn.Module, x_hat: Tensor, x_refined: Tensor, x: Tensor, s: float) -> Tensor:
        """``(1 - s) loss(x_hat, x) + s loss(x_refined, x)``; exactly ``loss(x_hat, x)`` when s is 0."""
        if s == 0.0:
            return loss(x_hat, x)
        if s == 1.0:
            return loss(x_refined, x)
        return (1.0 - s) * loss(x_hat, x) + s * loss(x_refined, x)

    @property
    def lpips(self) -> nn.Module:
        return self.perceptual.lpips

    @property
    def wasserstein(self) -> nn.Module:
        return self.perceptual.wasserstein

    def weights(self, lambda_rate: float, adversarial_on: bool = True) -> dict[str, float]:
        """Coefficients of this batch: ``rate`` -> ``lambda_rate``; L_G off during warm-up."""
        weights = {name: float(getattr(self.coefficients, name)) for name in LOSS_NAMES[1:]}
        if not adversarial_on:
            weights["adversarial"] = 0.0
        return {"rate": float(lambda_rate), **weights}


def weighted_total(losses: Mapping[str, Tensor], weights: Mapping[str, float]) -> Tensor:
    """``sum_k weights[k] * losses[k]`` over :data:`LOSS_NAMES`."""
    return sum(weights[name] * losses[name] for name in LOSS_NAMES)
