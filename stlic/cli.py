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

from stlic.allocator import retain_freed_memory

#: sub-command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("stlic.commands.train", "train an ST-LIC model from a YAML config"),
    "compress": ("stlic.commands.compress", "encode a PNG image into an .stlic bitstream"),
    "decompress": ("stlic.commands.decompress", "decode an .stlic bitstream into a PNG image"),
    "eval": ("stlic.commands.evaluate", "evaluate a checkpoint on an image folder (Table III)"),
    "rd": ("stlic.commands.rd", "RD curves and BD-rate against anchors"),
    "plot-dynamics": ("stlic.commands.plot_dynamics", "plot adversarial training dynamics (Fig. 2)"),
}

#: short-lived inference commands that keep freed memory for reuse (:mod:`stlic.allocator`)
RETAINING_COMMANDS = frozenset({"compress", "decompress", "eval"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stlic", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        command = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def one_line(error: BaseException, limit: int = 600) -> str:
    """The error's message on one line (long ones cut, ``--debug`` shows all)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[:limit] + " ... (--debug shows the whole message)"


def main(argv: list[str] | None = None) -> int:
    """Run a sub-command; a user error (bad file, bad value) is one line on stderr and exit code 2."""
    # CompressAI scripts functions at import; the deprecation is not actionable for CLI users
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)
    args = build_parser().parse_args(argv)
    if args.command in RETAINING_COMMANDS:
        retain_freed_memory()  # large activations reuse freed heap instead of faulting in fresh pages
    prefix = f"stlic {args.command}"
    original_format = warnings.formatwarning  # warnings print as one line (still recordable by callers)
    warnings.formatwarning = lambda message, *_, **__: f"{prefix}: warning: {message}\n"
    try:
        return int(args._run(args) or 0)
    except (OSError, ValueError, RuntimeError, MemoryError) as error:  # user-facing errors
        if getattr(args, "debug", False):
            raise
        print(f"{prefix}: error: {one_line(error)}", file=sys.stderr)
        return 2
    finally:
        warnings.formatwarning = original_format


if __name__ == "__main__":
    sys.exit(main())
