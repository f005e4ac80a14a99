"""Where configs and data live: repo-relative lookups and the embedded default data."""
from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
#: trained weights shipped with the repository (``pretrained/<name>/model.pt``)
PRETRAINED_DIR = REPO_ROOT / "pretrained"
#: the rate-distortion-pretrained tiny main network (phase 1), start of the CPU probe
TINY_RD_CHECKPOINT = PRETRAINED_DIR / "lalic_tiny_rd" / "model.pt"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


def resolve_config(name_or_path: str | Path) -> Path:
    """A YAML path as given, else ``configs/<name>.yaml`` of the repository."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.is_dir():
        raise ValueError(f"config {str(name_or_path)!r} is a directory, not a YAML file")
    for candidate in (CONFIG_DIR / path, CONFIG_DIR / f"{path}.yaml"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"config {str(name_or_path)!r} not found (looked for the file itself and in {CONFIG_DIR})"
    )


def default_image_dir() -> Path:
    """The embedded default data: scikit-image's bundled colour photographs.

    Used when no ``--data`` is given and ``../shared/data/train`` is absent, so a fresh
    machine can train and probe without downloads.
    """
    import skimage.data

    return Path(skimage.data.__file__).parent


#: scikit-image's bundled natural colour photographs (the rest are gray, synthetic or tiny)
DEFAULT_IMAGE_NAMES = (
    "astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "motorcycle_right.png",
    "rocket.jpg", "retina.jpg", "hubble_deep_field.jpg", "ihc.png", "color.png",
)


def default_train_images() -> list[Path]:
    """Paths of the embedded default photographs that exist in the installed scikit-image."""
    root = default_image_dir()
    return [root / name for name in DEFAULT_IMAGE_NAMES if (root / name).is_file()]


def shared_data(name: str) -> Path | None:
    """``../shared/data/<name>`` when it exists beside the repository, else None."""
    path = SHARED_DATA / name
    return path if path.is_dir() else None
