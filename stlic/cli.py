"""`stlic` command line: train, compress, decompress, eval, rd, plot-dynamics.

One module per sub-command in :mod:`stlic.commands`, each with ``add_arguments(parser)`` and
``run(args) -> int``; they import their heavy dependencies inside ``run``, so ``stlic compress``
does not import the trainer.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import warnings

#: sub-command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("stlic.commands.train", "train an ST-LIC model from a YAML config"),
    "compress": ("stlic.commands.compress", "encode a PNG image into an .stlic bitstream"),
    "decompress": ("stlic.commands.decompress", "decode an .stlic bitstream into a PNG image"),
    "eval": ("stlic.commands.evaluate", "evaluate a checkpoint on an image folder (Table III)"),
    "rd": ("stlic.commands.rd", "RD curves and BD-rate against anchors"),
    "plot-dynamics": ("stlic.commands.plot_dynamics", "plot adversarial training dynamics (Fig. 2)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stlic", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    # CompressAI scripts functions at import; the deprecation is not actionable for CLI users
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (FileNotFoundError, ValueError, RuntimeError) as error:  # user-facing errors
        if getattr(args, "debug", False):
            raise
        print(f"stlic {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
