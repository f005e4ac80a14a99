"""`stlic compress IN.png OUT.stlic --checkpoint C (--rate-level L | --target-bpp B) [-f]`.

OUT must not be IN or the checkpoint, nor exist unless ``--force``; it is written atomically
(:mod:`stlic.output_files`).
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="image to encode (PNG, JPEG, ...; converted to RGB)")
    parser.add_argument("output", type=Path, help="bitstream file to write (.stlic)")
    parser.add_argument("--checkpoint", type=Path, required=True, help="model checkpoint (stlic.checkpoints)")
    rate = parser.add_mutually_exclusive_group(required=True)
    rate.add_argument("--rate-level", type=float,
                      help="continuous QVRF level in [0, n_levels-1]; larger = larger rate coefficient, usually "
                           "fewer bits (not enforced: --target-bpp searches by the measured rate)")
    rate.add_argument("--target-bpp", type=float, help="search the level whose file comes closest to this bpp")
    parser.add_argument("--tolerance", type=float, default=0.02, help="relative bpp tolerance of --target-bpp")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("-f", "--force", action="store_true", help="overwrite an existing output file")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")


def run(args: argparse.Namespace) -> int:
    from stlic.checkpoints import load_model_checkpoint
    from stlic.codec.codec import bits_per_pixel, compress_image, find_level_for_bpp
    from stlic.codec.image_io import read_image
    from stlic.output_files import atomic_write_bytes, check_output

    check_output(args.output, (args.input, args.checkpoint), force=args.force)
    image = read_image(args.input)
    model, _, _ = load_model_checkpoint(args.checkpoint, map_location=args.device)
    if args.target_bpp is not None:
        search = find_level_for_bpp(model, image, args.target_bpp, rel_tolerance=args.tolerance)
        data, level = search.data, search.level
        note = "" if search.feasible else f" (target {args.target_bpp} bpp is outside the model's range)"
        print(f"rate search: level {level:.4f} after {search.iterations} encodes{note}")
    else:
        level = args.rate_level
        data = compress_image(model, image, level)
    check_output(args.output, (args.input, args.checkpoint), force=args.force)  # again: encoding takes time
    atomic_write_bytes(args.output, data)
    height, width = image.shape[-2:]
    print(f"{args.output}: {len(data)} bytes, {bits_per_pixel(data, image):.4f} bpp "
          f"({width}x{height}, level {level:.4f})")
    return 0
