"""ST-LIC losses: L = lambda * R + l1 L1 + l2 L2 (decoder output) + LPIPS + WD + adversarial
(refiner output), eq. 1-5 of "Stable Training for Perception-Oriented Learned Image Compression".
"""
from .adversarial import (AdversarialLoss, DiscriminatorStep, discriminator_health, discriminator_loss, generator_loss,
                          r1_penalty)
from .distortion import L1Loss, MSELoss
from .lpips import LPIPSLoss
from .perceptual import PerceptualLosses, PerceptualValues
from .rate import RateLoss, bits_per_pixel, bits_per_pixel_per_image
from .vgg import VGG16FeatureExtractor, VGGFeatures
from .wasserstein import LocalStatistics, WassersteinDistortion, local_statistics, wasserstein_distortion

__all__ = [
    "AdversarialLoss", "DiscriminatorStep", "discriminator_health", "discriminator_loss", "generator_loss", "r1_penalty",
    "L1Loss", "MSELoss", "LPIPSLoss", "PerceptualLosses", "PerceptualValues",
    "RateLoss", "bits_per_pixel", "bits_per_pixel_per_image",
    "VGG16FeatureExtractor", "VGGFeatures", "LocalStatistics", "WassersteinDistortion",
    "local_statistics", "wasserstein_distortion",
]
