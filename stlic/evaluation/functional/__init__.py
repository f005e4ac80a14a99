"""Pure metric functions (torchmetrics' ``functional`` split): no state, one call per batch."""
from stlic.evaluation.functional.fid import GaussianStats, fid_from_features, frechet_distance, gaussian_stats
from stlic.evaluation.functional.fid_patches import FID_PATCH_SIZE, count_fid_patches, extract_fid_patches
from stlic.evaluation.functional.ms_ssim import MS_SSIM_MIN_SIZE, ms_ssim
from stlic.evaluation.functional.psnr import mse_per_image, psnr, psnr_from_mse

__all__ = [
    "FID_PATCH_SIZE", "GaussianStats", "MS_SSIM_MIN_SIZE", "count_fid_patches", "extract_fid_patches",
    "fid_from_features", "frechet_distance", "gaussian_stats", "ms_ssim", "mse_per_image", "psnr",
    "psnr_from_mse",
]
