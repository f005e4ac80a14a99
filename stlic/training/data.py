"""Training images: folders scanned recursively, random crops, and a resumable sample stream.

Every crop is a pure function of ``(seed, stage, global position in the stream)``: the sampler
hands the dataset a per-sample seed, so the data seen after ``--resume`` (or on any number of
DataLoader workers, or split over DDP ranks) is exactly the data an uninterrupted run sees.

Images smaller than the patch are, per ``small_images``:

* ``"pad"``: reflect-padded (bottom/right) up to the patch size, repeating the reflection when
  the image is less than half the patch;
* ``"upscale"``: resized (bicubic, aspect kept) so the shorter side equals the patch size.

A file that is not an image, or an image whose pixels cannot be decoded (truncated, corrupt,
above Pillow's decompression-bomb limit), is skipped with a warning naming it (the sample falls
to the next readable file of the list, so the stream stays a pure function of its seeds); with
``strict=True`` (config ``schedule.strict_data``) it stops training with an error instead.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from stlic.codec.image_io import read_image
from stlic.paths import default_train_images, shared_data


def find_images(sources: Sequence[str | Path], strict: bool = False) -> list[Path]:
    """Image files under ``sources`` (folders, searched recursively, or single files), sorted.

    A file PIL cannot identify is skipped with a warning naming it (``strict``: ``ValueError``);
    a source without any image raises ``ValueError``.
    """
    images: list[Path] = []
    for source in map(Path, sources):
        if not source.exists():
            raise FileNotFoundError(f"training data {str(source)!r} does not exist")
        candidates = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
        found = [path for path in candidates if not path.name.startswith(".") and _is_image(path, strict)]
        if not found:
            raise ValueError(f"no images found in training data {str(source)!r}")
        images += found
    return images


def _is_image(path: Path, strict: bool = False) -> bool:
    """PIL identifies the file from its header (cheap: pixels are decoded on first use)."""
    try:
        with Image.open(path):
            return True
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        if strict:
            raise ValueError(f"training data {str(path)!r} is not a readable image ({error}); "
                             "strict data: remove it or set schedule.strict_data: false") from None
        warnings.warn(f"skipping {str(path)!r}: not a readable image", stacklevel=3)
        return False


def default_data_sources() -> list[Path]:
    """``../shared/data/train`` beside the repository if present, else scikit-image's photos."""
    shared = shared_data("train")
    return [shared] if shared is not None else default_train_images()


def load_rgb(path: str | Path) -> Tensor:
    """Image as float (3, H, W) in [0, 1]: the codec's reader (grayscale, RGBA with alpha dropped,
    palette and 16-bit images -> 8-bit RGB), so training and coding see the same pixels."""
    return read_image(path)


def fit_to_patch(image: Tensor, patch_size: int, small_images: str = "pad") -> Tensor:
    """Grow ``image`` (3, H, W) so both sides are >= ``patch_size`` (see module docstring)."""
    height, width = image.shape[-2:]
    if min(height, width) >= patch_size:
        return image
    if small_images == "upscale":
        scale = patch_size / min(height, width)
        size = (max(patch_size, round(height * scale)), max(patch_size, round(width * scale)))
        return F.interpolate(image[None], size=size, mode="bicubic", align_corners=False)[0].clamp_(0, 1)
    if small_images != "pad":
        raise ValueError(f"small_images must be 'pad' or 'upscale', got {small_images!r}")
    while min(image.shape[-2:]) < patch_size:
        height, width = image.shape[-2:]
        pad_h = min(max(patch_size - height, 0), height - 1)
        pad_w = min(max(patch_size - width, 0), width - 1)
        if (pad_h == 0 and height < patch_size) or (pad_w == 0 and width < patch_size):  # 1-pixel side
            return F.pad(image[None], (0, max(patch_size - width, 0), 0, max(patch_size - height, 0)),
                         mode="replicate")[0]
        image = F.pad(image[None], (0, pad_w, 0, pad_h), mode="reflect")[0]
    return image


class ImageFolder(Dataset):
    """Random ``patch_size`` crops (and horizontal flips) of the images under ``sources``.

    Indexed by ``(index, sample_seed)`` pairs (see :class:`ResumableSampler`); a plain ``int``
    index uses ``sample_seed = index``. Returns float (3, P, P) in [0, 1].


    Decoded images are kept in memory as 8-bit arrays, up to ``cache_bytes`` per process
    (default 2 GiB; 0 = off): decoding a 1024x640 PNG costs ~40 ms, more than a tiny-model step
    spends on a whole 64-pixel crop. Cached or not, a crop holds the same pixels.
    """

    def __init__(self, sources: Sequence[str | Path], patch_size: int, small_images: str = "pad",
                 strict: bool = False, cache_bytes: int = 2 << 30) -> None:
        if patch_size < 1:
            raise ValueError(f"patch_size must be positive, got {patch_size}")
        if cache_bytes < 0:
            raise ValueError(f"cache_bytes must be >= 0, got {cache_bytes}")
        self.files = find_images(sources, strict)
        self.patch_size = patch_size
        self.small_images = small_images
        self.strict = strict
        self.cache_bytes = cache_bytes
        self._cache: dict[int, Tensor] = {}
        self._cached_bytes = 0

    def _load(self, index: int) -> Tensor:
        """Image ``index``, else (corrupt, not strict) the next readable one, with a warning."""
        for offset in range(len(self.files)):
            path = self.files[(index + offset) % len(self.files)]
            try:
                return load_rgb(path)
            except (ValueError, OSError) as error:
                if self.strict:
                    raise ValueError(f"training image {str(path)!r} cannot be decoded ({error}); strict data: "
                                     "remove it or set schedule.strict_data: false") from None
                warnings.warn(f"skipping training image {str(path)!r}: {error}", stacklevel=3)
        raise ValueError(f"none of the {len(self.files)} training images can be decoded")

    def _pixels(self, index: int) -> Tensor:
        """Image ``index`` as 8-bit (3, H, W) uint8, kept in memory while the cache budget allows.

        Decoding a photograph costs far more than a training step of a small model, and the
        stored bytes are exact: ``load_rgb`` values are ``k / 255``.
        """
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        pixels = self._load(index).mul_(255.0).round_().to(torch.uint8)
        if self._cached_bytes + pixels.numel() <= self.cache_bytes:
            self._cache[index] = pixels
            self._cached_bytes += pixels.numel()
        return pixels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: int | tuple[int, int]) -> Tensor:
        index, sample_seed = item if isinstance(item, tuple) else (item, item)
        image = self._pixels(index)
        if min(image.shape[-2:]) < self.patch_size:
            image = fit_to_patch(image.float().div_(255.0), self.patch_size, self.small_images)
        generator = torch.Generator().manual_seed(int(sample_seed))
        height, width = image.shape[-2:]
        top = int(torch.randint(height - self.patch_size + 1, (1,), generator=generator))
        left = int(torch.randint(width - self.patch_size + 1, (1,), generator=generator))
        patch = image[:, top:top + self.patch_size, left:left + self.patch_size]
        if patch.dtype == torch.uint8:
            patch = patch.float().div_(255.0)
        if bool(torch.rand((), generator=generator) < 0.5):
            patch = patch.flip(-1)
        return patch.contiguous()


class ResumableSampler(Sampler):
    """Endless stream of ``(index, sample_seed)``, split over ranks like DistributedSampler.

    The global stream concatenates one random permutation of the dataset per epoch
    (``torch.randperm`` seeded by ``(seed, stream, epoch)``); rank ``r`` of ``world_size``
    takes global positions ``r, r + W, r + 2W, ...`` starting after ``start`` of its own samples.
    ``sample_seed`` depends only on the global position, so a batch of ``W * B`` in one process
    holds the same crops as ``W`` ranks with batches of ``B``.
    """

    def __init__(self, num_items: int, seed: int, stream: int = 0, rank: int = 0,
                 world_size: int = 1, start: int = 0) -> None:
        if num_items < 1:
            raise ValueError("ResumableSampler needs a non-empty dataset")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.num_items, self.seed, self.stream = num_items, seed, stream
        self.rank, self.world_size, self.start = rank, world_size, start

    def _permutation(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(_mix(self.seed, self.stream, epoch))
        return torch.randperm(self.num_items, generator=generator).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        position = self.start * self.world_size + self.rank
        epoch, permutation = -1, []
        while True:
            if position // self.num_items != epoch:
                epoch = position // self.num_items
                permutation = self._permutation(epoch)
            yield permutation[position % self.num_items], _mix(self.seed, self.stream, position, 1)
            position += self.world_size


def _mix(*values: int) -> int:
    """A 63-bit seed from integers (numpy SeedSequence hashing)."""
    return int(np.random.SeedSequence(list(values)).generate_state(2, np.uint64)[0] >> np.uint64(1))


def make_loader(dataset: ImageFolder, batch_size: int, sampler: ResumableSampler,
                num_workers: int = 0) -> Iterator[Tensor]:
    """Endless iterator of (B, 3, P, P) batches drawn by ``sampler``."""
    from torch.utils.data import DataLoader

    # a private generator: creating the iterator must not draw from the global torch RNG
    # (that would shift the model's quantisation noise after a resume)
    generator = torch.Generator().manual_seed(_mix(sampler.seed, sampler.stream, sampler.start, 2))
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                        drop_last=True, generator=generator)
    return iter(loader)
