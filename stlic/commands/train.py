"""`stlic train`: train ST-LIC from a YAML config, then export ``RUN/model.pt``.

    stlic train --config stlic_tiny --data ../shared/data/train --out runs/tiny [--steps N]
    torchrun --nproc_per_node 2 -m stlic train --config stlic_small --out runs/small   # DDP

``--resume`` continues exactly from ``RUN/checkpoint.pt`` (the config stored there unless
``--config`` is given). A NaN / inf loss or gradient stops training with exit status 3 and
leaves the last good checkpoint in place.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML path or name under configs/ (e.g. stlic_015, stlic_tiny)")
    parser.add_argument("--data", nargs="+", metavar="DIR",
                        help="image folders for every stage (default: stage data, ../shared/data/train, "
                             "else scikit-image's photos)")
    parser.add_argument("--out", required=True, help="run folder (logs, checkpoint.pt, model.pt)")
    parser.add_argument("--steps", type=int, help="stop at this step (default: the schedule's total)")
    parser.add_argument("--resume", action="store_true", help="continue from RUN/checkpoint.pt")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto: cuda when available)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), help="override the config's precision")
    parser.add_argument("--seed", type=int, help="override the config's seed")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def _config(args: argparse.Namespace):
    from stlic.training.checkpoint import load_checkpoint
    from stlic.training.config import TrainConfig, load_config

    if args.config is not None:
        config = load_config(args.config)
    elif args.resume:
        config = TrainConfig.from_dict(load_checkpoint(args.out)["config"])
    else:
        raise ValueError("--config is required (unless --resume takes it from the checkpoint)")
    changes = {key: getattr(args, key) for key in ("precision", "seed") if getattr(args, key) is not None}
    return config.replace(**changes) if changes else config


def run(args: argparse.Namespace) -> int:
    import torch

    from stlic.checkpoints import save_model_checkpoint
    from stlic.training.distributed import init_distributed
    from stlic.training.finite import NonFiniteLossError
    from stlic.training.solver import STLICSolver

    if args.steps is not None and args.steps < 0:
        raise ValueError(f"--steps must be >= 0, got {args.steps}")
    from stlic.devices import resolve_device

    device = resolve_device(args.device)
    context = init_distributed(device)
    if context.enabled and device.type == "cuda":
        device = torch.device("cuda", context.local_rank)
    config = _config(args)
    out = Path(args.out)
    solver = STLICSolver(config, device=device, out_dir=out, data=args.data, context=context)
    if args.resume:
        print(f"resuming {out} from step {solver.resume()}", file=sys.stderr)
    try:
        solver.fit(args.steps)
    except NonFiniteLossError as error:
        print(f"stlic train: stopped: {error}; the last good checkpoint is kept in {out}", file=sys.stderr)
        return 3
    if context.is_main:
        solver.model.update(force=True)
        path = save_model_checkpoint(out / "model.pt", solver.model.eval(), solver.model_config,
                                     extra={"step": solver.step, "train_config": config.to_dict()})
        print(f"exported {path} at step {solver.step}")
    return 0
