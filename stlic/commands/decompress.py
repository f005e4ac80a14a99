"""`stlic decompress IN.stlic OUT.png --checkpoint C [--decoder-output] [-f]`.

OUT must not be IN or the checkpoint, nor exist unless ``--force``; it is written atomically
(:mod:`stlic.output_files`).
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="bitstream written by `stlic compress`")
    parser.add_argument("output", type=Path, help="image to write (format from the suffix, e.g. .png)")
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="the model checkpoint that encoded the file (its fingerprint is checked)")
    parser.add_argument("--decoder-output", action="store_true",
                        help="write the main decoder's x_hat instead of the refined image (skips the refiner)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("-f", "--force", action="store_true", help="overwrite an existing output file")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")


def run(args: argparse.Namespace) -> int:
    from stlic.checkpoints import load_model_checkpoint
    from stlic.codec.codec import decompress_image
    from stlic.codec.image_io import image_format, write_image
    from stlic.output_files import check_output, read_input_bytes

    check_output(args.output, (args.input, args.checkpoint), force=args.force)
    image_format(args.output)
    data = read_input_bytes(args.input, "bitstream")
    model, _, _ = load_model_checkpoint(args.checkpoint, map_location=args.device)
    decoded = decompress_image(model, data, refine=not args.decoder_output)  # x_hat alone: no refiner pass
    image = decoded.x_hat if args.decoder_output else decoded.x_refined
    check_output(args.output, (args.input, args.checkpoint), force=args.force)  # again: decoding takes time
    write_image(args.output, image)
    which = "decoder output x_hat" if args.decoder_output else "refined image"
    print(f"{args.output}: {which}, {image.shape[-1]}x{image.shape[-2]}")
    return 0
