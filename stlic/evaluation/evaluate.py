"""`stlic eval`: real-bitstream evaluation of a checkpoint, or of the JPEG anchor, on an image folder
(ST-LIC Table III). The codec is a coder of :mod:`stlic.evaluation.coders`, so both go through the
same loop, metrics and files.

For every image: encode with the codec (``bpp = 8 * len(file) / (H * W)``), decode, and measure
PSNR, MS-SSIM and LPIPS of both reconstructions (decoder output and refined output); over the set,
FID/256 of both (HiFiC patch protocol). The reference image goes through the LPIPS and Inception
networks once for both outputs, and an output equal to the other (no refiner, JPEG) reuses its
scores: on Kodak that is 3 VGG-16 passes per image instead of 4, and 2 instead of 4 for JPEG. Writes
``per_image.csv``, ``summary.json``, ``table3.md`` (and K comparison figures) into ``out``.
``per_image.csv`` is rewritten (atomically) after every image, and a line per image reports its
level, bpp and scores (unless ``progress=False``): a long run shows where it is, and a killed one
leaves the images done so far (``summary.json`` is written only at the end).

Input handling: a missing folder or one without images raises; a file with an image suffix that
cannot be read, an image over the decoder's pixel limit (before any coding) and one that cannot be
coded (e.g. not enough memory) are skipped with a warning naming it and the reason (and listed in
the summary's notes, which start with how many images were evaluated and skipped); every image
``stlic compress`` accepts is evaluated. With a target bpp, an image whose closest rate is more
than 2 % off is counted in the notes (JPEG, for one, cannot go under its quality-1 rate). Images
smaller than 161 px get MS-SSIM = NaN (excluded from the mean, noted); a side under the LPIPS network's smallest is edge-padded for LPIPS
(:class:`~stlic.evaluation.metrics.LPIPSMetric`, noted). FID is refused up front, before any
coding, when the set has fewer than ``fid_min_patches`` patches.
"""
from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from PIL import Image
from tqdm import tqdm

from stlic.evaluation.functional.fid_patches import FID_PATCH_SIZE, count_fid_patches
from stlic.evaluation.functional.ms_ssim import MS_SSIM_MIN_SIZE
from stlic.evaluation.metrics import MIN_FID_PATCHES, FIDMetric, LPIPSMetric, MSSSIMMetric, PSNRMetric
from stlic.evaluation.metrics.fid import check_fid_sample_count
from stlic.evaluation.results import OUTPUTS, EvalSummary, ImageResult, OutputSummary, write_per_image, write_results
from stlic.paths import IMAGE_SUFFIXES

DISTS_UNAVAILABLE = (
    "DISTS not computed: no implementation with offline real weights is available "
    "(piq's DISTS downloads its weights at run time)"
)


@dataclass
class EvalOptions:
    rate_level: float | None = None  # QVRF level; default 0 when no target bpp is given
    target_bpp: float | None = None  # per-image level search (find_level_for_bpp)
    lpips_net: str = "vgg"
    lpips_source: str = "stlpips"
    lpips_weights: str | None = None
    fid: bool = True
    fid_min_patches: int = MIN_FID_PATCHES
    inception_path: str | None = None
    dists: bool = False
    limit: int | None = None
    figures: int = 0
    method: str | None = None
    progress: bool = True
    device: str = "auto"  # the codec's device (metrics run on the CPU); auto: cuda when available
    jpeg: bool = False  # evaluate Pillow JPEG (4:2:0) instead of a checkpoint; rate_level is its quality


class ImageFile(NamedTuple):
    path: Path
    height: int
    width: int


class EvalResult(NamedTuple):
    summary: EvalSummary
    images: list[ImageResult]
    files: dict[str, Path]


def find_images(folder: str | Path, limit: int | None = None) -> tuple[list[ImageFile], list[str]]:
    """Readable images of ``folder`` (sorted, at most ``limit``) and the warnings for skipped files."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {str(folder)!r} does not exist or is not a directory")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be at least 1, got {limit}")
    candidates = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    images, skipped = [], []
    for path in candidates:
        try:
            with Image.open(path) as image:
                image.verify()
                width, height = image.size
        except Exception as error:  # PIL raises many types for broken files
            skipped.append(f"skipped unreadable image {path.name} ({type(error).__name__}: {error})")
            warnings.warn(skipped[-1])
            continue
        images.append(ImageFile(path, height, width))
        if limit is not None and len(images) == limit:
            break
    if not images:
        raise ValueError(f"no readable images in {str(folder)!r} (suffixes {', '.join(IMAGE_SUFFIXES)})")
    return images, skipped


def _skip(notes: list[str], file: ImageFile, reason: str) -> None:
    """Warn that ``file`` is skipped and why; the reason goes into the summary's notes."""
    notes.append(f"skipped {file.path.name} ({file.width}x{file.height}): {reason}")
    warnings.warn(notes[-1])


def _codable(files: list[ImageFile], notes: list[str]) -> list[ImageFile]:
    """The images the decoder can decode; the others are skipped before any coding (as
    ``stlic compress`` refuses them), so FID counts only the images that will be evaluated."""
    from stlic.codec.codec import check_decodable_size

    kept = []
    for file in files:
        try:
            check_decodable_size(file.height, file.width)
        except ValueError as error:
            _skip(notes, file, str(error))
            continue
        kept.append(file)
    return kept


class ImageScores(NamedTuple):
    psnr: float
    ms_ssim: float  # NaN under MS_SSIM_MIN_SIZE
    lpips: float


class _OutputMetrics:
    """PSNR, MS-SSIM, LPIPS (and FID) accumulators of one reconstruction."""

    def __init__(self, lpips: LPIPSMetric, fid: FIDMetric | None) -> None:
        self.psnr, self.ms_ssim, self.lpips, self.fid = PSNRMetric(), MSSSIMMetric(), lpips, fid

    def update(self, x: torch.Tensor, x_hat: torch.Tensor, reference=None, same_as: ImageScores | None = None
               ) -> ImageScores:
        """Scores of ``x_hat`` against ``x``. ``reference``: ``x``'s LPIPS features, computed once for
        both outputs; ``same_as``: the scores of an identical reconstruction (no refiner, JPEG),
        whose LPIPS is reused instead of a second pass through the network."""
        psnr = float(self.psnr.update(x, x_hat)[0])
        ms_ssim = float(self.ms_ssim.update(x, x_hat)[0]) if min(x.shape[-2:]) >= MS_SSIM_MIN_SIZE else math.nan
        if same_as is not None:
            self.lpips.update_values(torch.tensor([same_as.lpips], dtype=torch.float64))
            return ImageScores(psnr, ms_ssim, same_as.lpips)
        return ImageScores(psnr, ms_ssim, float(self.lpips.update(x_hat, x, reference)[0]))

    def summary(self) -> OutputSummary:
        psnr = self.psnr.compute()
        fid = self.fid.compute() if self.fid is not None else None
        return OutputSummary(
            psnr=psnr.mean_psnr, psnr_pooled=psnr.pooled_psnr,
            ms_ssim=self.ms_ssim.compute() if self.ms_ssim.count else None, lpips=self.lpips.compute(),
            fid=fid.fid if fid else None, fid_patches=fid.num_fake if fid else None,
        )


def _build_metrics(options: EvalOptions) -> dict[str, _OutputMetrics]:
    """One accumulator set per output; the LPIPS and Inception networks are loaded once, shared."""
    from stlic.evaluation.lpips_metric import make_lpips_metric

    lpips = make_lpips_metric(options.lpips_net, options.lpips_source, options.lpips_weights)
    inception = None
    if options.fid:
        from stlic.evaluation.inception import FIDInceptionV3

        inception = FIDInceptionV3(options.inception_path)
    return {
        output: _OutputMetrics(
            lpips if index == 0 else LPIPSMetric(lpips.distance, lpips.name, lpips.features, lpips.distance_from_features),
            FIDMetric(inception, min_patches=options.fid_min_patches) if inception is not None else None,
        )
        for index, output in enumerate(OUTPUTS)
    }


def _make_coder(checkpoint: str | Path | None, options: EvalOptions):
    """The codec under test: the checkpoint's model, or JPEG (``checkpoint`` None, ``options.jpeg``)."""
    from stlic.evaluation.coders import JpegCoder, ModelCoder

    if options.target_bpp is not None and not (math.isfinite(options.target_bpp) and options.target_bpp > 0):
        raise ValueError(f"target bpp must be a positive number, got {options.target_bpp}")
    if options.jpeg:
        if checkpoint is not None:
            raise ValueError("give either a checkpoint or JPEG, not both")
        return JpegCoder(quality=options.rate_level, target_bpp=options.target_bpp)
    if checkpoint is None:
        raise ValueError("no checkpoint given (or ask for the JPEG anchor)")
    return ModelCoder(checkpoint, level=options.rate_level, target_bpp=options.target_bpp, device=options.device)


def _fid_still_possible(results: list[ImageResult], options: EvalOptions, notes: list[str]) -> bool:
    """After images were skipped mid-run, FID only if the evaluated ones still give enough patches."""
    patches = sum(count_fid_patches(r.height, r.width) for r in results)
    if patches >= options.fid_min_patches:
        return True
    notes.append(f"FID not computed: the evaluated images give {patches} patches of {FID_PATCH_SIZE} px, fewer "
                 f"than --fid-min-patches {options.fid_min_patches}, after images were skipped")
    warnings.warn(notes[-1])
    return False


def _check_options(options: EvalOptions) -> None:
    if options.rate_level is not None and options.target_bpp is not None:
        raise ValueError("give either a rate level or a target bpp, not both")
    if options.figures < 0:
        raise ValueError(f"--figures must be >= 0, got {options.figures}")


def evaluate(checkpoint: str | Path | None, data: str | Path, out: str | Path, options: EvalOptions | None = None
             ) -> EvalResult:
    """Evaluate ``checkpoint`` (or JPEG, with ``options.jpeg`` and no checkpoint) on the images of
    ``data``; results go to ``out`` (see module doc)."""
    from stlic.codec.codec import bits_per_pixel
    from stlic.codec.image_io import read_image
    from stlic.evaluation.figures import PanelScores, save_comparison_figure

    options = options or EvalOptions()
    _check_options(options)
    files, notes = find_images(data, options.limit)
    found = len(files) + len(notes)  # readable images and the unreadable ones skipped
    files = _codable(files, notes)
    if not files:
        raise ValueError(f"no image of {str(data)!r} can be coded; the last {notes[-1]}")
    if options.dists:
        warnings.warn(DISTS_UNAVAILABLE)
        notes.append(DISTS_UNAVAILABLE)
    if options.fid:  # refuse before spending minutes on coding
        patches = sum(count_fid_patches(f.height, f.width) for f in files)
        check_fid_sample_count(patches, options.fid_min_patches)
    coder = _make_coder(checkpoint, options)  # a bad level is the user's, not one image's: refused here
    metrics = _build_metrics(options)
    lpips = metrics[OUTPUTS[0]].lpips
    out = Path(out)
    results: list[ImageResult] = []
    padded_lpips = off_target = 0
    bar = tqdm(files, desc="stlic eval", unit="img", disable=not options.progress)
    for index, file in enumerate(bar):
        try:
            x = read_image(file.path)
            coded = coder.encode(x)
            x_hat, x_refined = coder.decode(coded.data)
        except (ValueError, MemoryError) as error:  # this image only: the others are still evaluated
            _skip(notes, file, " ".join(str(error).split()))
            continue
        data_bytes, level = coded.data, coded.level
        off_target += not coded.feasible
        x = x.unsqueeze(0)
        padded_lpips += lpips.needs_padding(x)
        outputs = {"decoder": x_hat.cpu().clamp(0, 1), "refined": x_refined.cpu().clamp(0, 1)}
        # one reference pass per image (LPIPS and FID); an output equal to the decoder's (no refiner,
        # JPEG) reuses the decoder's LPIPS and FID features instead of a second pass
        same = torch.equal(outputs["refined"], outputs["decoder"])
        reference = lpips.reference(x)
        scores = {"decoder": metrics["decoder"].update(x, outputs["decoder"], reference)}
        scores["refined"] = metrics["refined"].update(x, outputs["refined"], reference,
                                                      same_as=scores["decoder"] if same else None)
        if options.fid:
            real_features = metrics[OUTPUTS[0]].fid.patch_features(x)  # shared reference pass
            fake_features = {"decoder": metrics["decoder"].fid.patch_features(outputs["decoder"])}
            fake_features["refined"] = (fake_features["decoder"] if same
                                        else metrics["refined"].fid.patch_features(outputs["refined"]))
            for name in OUTPUTS:
                metrics[name].fid.update_features(real_features, real=True)
                metrics[name].fid.update_features(fake_features[name], real=False)
        bpp = bits_per_pixel(data_bytes, x)
        decoder, refined = scores["decoder"], scores["refined"]
        results.append(ImageResult(
            file.path.name, file.height, file.width, level, len(data_bytes), bpp, decoder.psnr, refined.psnr,
            decoder.ms_ssim, refined.ms_ssim, decoder.lpips, refined.lpips,
        ))
        write_per_image(out, results)
        if options.progress:
            bar.write(f"[{index + 1}/{len(files)}] {file.path.name}: level {level:.3f}, {bpp:.4f} bpp, PSNR "
                      f"{decoder.psnr:.2f} / {refined.psnr:.2f} dB, {lpips.name} {decoder.lpips:.4f} / "
                      f"{refined.lpips:.4f} (decoder / refined)", file=sys.stderr)
        if len(results) <= options.figures:
            save_comparison_figure(
                out / "figures" / f"{file.path.stem}.png", x, outputs["decoder"], outputs["refined"], bpp,
                PanelScores(decoder.psnr, decoder.lpips), PanelScores(refined.psnr, refined.lpips), lpips.name,
                image_name=file.path.name,
            )
    if not results:
        raise ValueError(f"no image of {str(data)!r} could be evaluated; the last {notes[-1]}")
    skipped = found - len(results)
    if options.fid and skipped > found - len(files) and not _fid_still_possible(results, options, notes):
        for name in OUTPUTS:
            metrics[name].fid = None
    notes.insert(0, f"evaluated {len(results)} of {found} image(s), skipped {skipped}")
    if padded_lpips:
        notes.append(f"LPIPS of {padded_lpips} image(s) with a side under {lpips.min_side()} px, the smallest "
                     f"{lpips.name} takes, computed on edge-padded copies")
    if any(math.isnan(r.ms_ssim_refined) for r in results):
        notes.append(f"MS-SSIM skipped for images under {MS_SSIM_MIN_SIZE} px (NaN in per_image.csv)")
    if off_target:
        notes.append(f"{off_target} image(s) could not reach {options.target_bpp} bpp within "
                     f"{100 * coder.tolerance:g} %: each was coded at the {coder.level_name} closest to it")
    if not options.fid:
        notes.append("FID disabled (--no-fid)")
    summary = EvalSummary(
        method=options.method or coder.name,
        checkpoint=str(checkpoint) if checkpoint is not None else coder.name, data=str(data), num_images=len(results),
        bpp=sum(r.bpp for r in results) / len(results),
        rate_level=None if options.target_bpp is not None else (options.rate_level or 0.0),
        target_bpp=options.target_bpp, lpips_name=lpips.name,
        fid_name=f"FID/{FID_PATCH_SIZE}",
        outputs={name: metrics[name].summary() for name in OUTPUTS}, notes=notes, num_skipped=skipped,
    )
    return EvalResult(summary, results, write_results(out, summary, results))
