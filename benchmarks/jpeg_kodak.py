"""JPEG anchor on Kodak: Pillow's JPEG encoder at 4:2:0 over a quality sweep.

    python benchmarks/jpeg_kodak.py [--data ../shared/data/kodak] [--out reports/anchors/jpeg_pillow_kodak.csv]

bpp = 8 * file bytes / (H * W); PSNR is the mean of per-image PSNR on 8-bit RGB (the convention of
``stlic eval`` and of the papers). The CSV is an ``stlic rd --anchors`` file, so
``stlic rd EVAL_DIRS --anchors reports/anchors/jpeg_pillow_kodak.csv`` gives a model's BD-rate
against JPEG over the PSNR range where both curves overlap.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import PIL

from stlic.codec.codec import bits_per_pixel
from stlic.codec.image_io import read_image
from stlic.evaluation.coders import jpeg_bytes, jpeg_decode
from stlic.evaluation.functional.psnr import psnr
from stlic.training.data import find_images

QUALITIES = (1, 3, 5, 8, 10, 15, 20, 30, 40, 50, 60, 75, 90)


def jpeg_point(paths: list[Path], quality: int) -> tuple[float, float]:
    """(mean bpp, mean per-image PSNR) of ``paths`` coded at ``quality`` with 4:2:0 subsampling."""
    bpps, psnrs = [], []
    for path in paths:
        x = read_image(path)
        data = jpeg_bytes(x, quality)  # the coder `stlic eval --jpeg` uses
        y = jpeg_decode(data)[0]
        bpps.append(bits_per_pixel(data, x))
        psnrs.append(float(psnr(y[None], x[None])[0]))
    return float(np.mean(bpps)), float(np.mean(psnrs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/kodak")
    parser.add_argument("--out", default="reports/anchors/jpeg_pillow_kodak.csv")
    args = parser.parse_args()
    paths = find_images([args.data])
    lines = [f"# JPEG (Pillow {PIL.__version__}, libjpeg, 4:2:0, default tables) on {len(paths)} images of "
             f"{args.data}; mean per-image PSNR. Reproduce: python benchmarks/jpeg_kodak.py",
             "method,bpp,psnr"]
    for quality in QUALITIES:
        bpp, value = jpeg_point(paths, quality)
        lines.append(f"JPEG (Pillow 4:2:0),{bpp:.4f},{value:.3f}")
        print(f"q={quality:3d}  bpp={bpp:.4f}  PSNR={value:.3f} dB")
    out = Path(args.out)
    handle, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        file.write("\n".join(lines) + "\n")
    os.replace(tmp, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
