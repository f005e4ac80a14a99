"""ST-LIC models: LALIC main network + UNet refiner, presets and typed outputs."""
from stlic.models.config import PAPER_LAMBDA_RANGES, PRESETS, ModelConfig, log_spaced_lambdas, preset
from stlic.models.lalic import LALIC
from stlic.models.outputs import CompressedImage, DecodedImage, LALICOutput, STLICOutput
from stlic.models.stlic import STLIC, pad_to_multiple

__all__ = [
    "LALIC", "STLIC", "ModelConfig", "PRESETS", "PAPER_LAMBDA_RANGES", "preset", "log_spaced_lambdas",
    "CompressedImage", "DecodedImage", "LALICOutput", "STLICOutput", "pad_to_multiple",
]
