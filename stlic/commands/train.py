"""`stlic train`: train ST-LIC from a YAML config, then export ``RUN/model.pt``.

    stlic train --config stlic_tiny --data ../shared/data/train --out runs/tiny [--steps N]
    torchrun --nproc_per_node 2 -m stlic train --config stlic_small --out runs/small   # DDP

``--init CHECKPOINT`` starts the main network from trained weights (phase 2 of ST-LIC from a
phase-1 ``model.pt`` or an official LALIC checkpoint; refiner = identity, fresh optimizers); a
config whose rate range differs from the checkpoint's QVRF levels is refused unless
``--accept-rate-range``.
``--resume`` continues exactly from ``RUN/checkpoint.pt`` (the config stored there unless
``--config`` is given, which must build the same model); a stop step (``--steps``, else the
schedule's total) below the checkpoint's is refused (nothing to train), one equal to it trains
nothing and re-exports the model. A NaN / inf loss or gradient stops training with exit status 3
and leaves the last good checkpoint in place.

The run folder is locked while training (:mod:`stlic.training.run_lock`; a second ``stlic train``
on it stops with an error), temporary files a killed run left there are removed, and a folder
that already holds a run is refused unless ``--resume`` (continue it) or ``--force`` (start over:
its checkpoint and model are deleted).
"""
from __future__ import annotations

import argparse
import contextlib
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
    parser.add_argument("--init", metavar="CHECKPOINT",
                        help="start the main network from trained weights: an stlic model.pt, a training "
                             "checkpoint.pt or an official LALIC checkpoint (refiner = identity, fresh optimizers)")
    parser.add_argument("--accept-rate-range", action="store_true",
                        help="with --init: accept a config whose rate range (loss_weights.rate) differs from the "
                             "QVRF levels the checkpoint was trained for (the levels then retrain for the new range)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto: cuda when available)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), help="override the config's precision")
    parser.add_argument("--seed", type=int, help="override the config's seed")
    parser.add_argument("-f", "--force", action="store_true",
                        help="start over in a run folder that already holds a run (deletes its checkpoint)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


def _config(args: argparse.Namespace, state: dict | None):
    from stlic.training.config import TrainConfig, load_config

    if args.config is not None:
        config = load_config(args.config)
    elif state is not None:
        config = TrainConfig.from_dict(state["config"])
    else:
        raise ValueError("--config is required (unless --resume takes it from the checkpoint)")
    changes = {key: getattr(args, key) for key in ("precision", "seed") if getattr(args, key) is not None}
    return config.replace(**changes) if changes else config


def _check_same_model(config, state: dict, out: Path) -> None:
    """A --config given with --resume must build the checkpoint's model and discriminator."""
    import dataclasses

    from stlic.training.config import TrainConfig

    stored = TrainConfig.from_dict(state["config"])
    pairs = (("model", dataclasses.asdict(stored.model_config()), dataclasses.asdict(config.model_config())),
             ("discriminator", dataclasses.asdict(stored.discriminator), dataclasses.asdict(config.discriminator)))
    for section, old, new in pairs:
        changed = [f"{key} {old[key]!r} -> {new.get(key)!r}" for key in old if old[key] != new.get(key)]
        if changed:
            raise ValueError(f"--config builds a different {section} than the checkpoint in {str(out)!r} "
                             f"({'; '.join(changed[:3])}{' ...' if len(changed) > 3 else ''}); "
                             "resume without --config to use the checkpoint's own")


def _check_rate_range(report, model_config, accept: bool) -> None:
    """--init keeps the checkpoint's operating point unless --accept-rate-range (then a warning)."""
    from stlic.training.initialize import rate_range_change

    change = rate_range_change(report, model_config.rate_lambdas)
    if change is None:
        return
    if not accept:
        raise ValueError(f"--init: {change}; set loss_weights.rate to the checkpoint's range, or pass "
                         "--accept-rate-range to move the operating point")
    print(f"warning: --init: {change} (accepted: --accept-rate-range)", file=sys.stderr)


def _prepare_run_folder(args: argparse.Namespace, out: Path) -> None:
    """Under the lock: drop a killed run's temporaries; refuse to train over a run unless asked."""
    from stlic.checkpoints import remove_stale_temporaries
    from stlic.training.checkpoint import CHECKPOINT_NAME

    removed = remove_stale_temporaries(out, (CHECKPOINT_NAME, "model.pt"))
    if removed:
        print(f"removed {len(removed)} temporary file(s) a killed run left in {out}", file=sys.stderr)
    if args.resume:
        return
    existing = [out / name for name in (CHECKPOINT_NAME, "model.pt") if (out / name).exists()]
    if existing and not args.force:
        raise FileExistsError(f"run folder {str(out)!r} already holds a run ({existing[0].name}); "
                              "use --resume to continue it or --force to start over")
    for path in existing:
        path.unlink()


def run(args: argparse.Namespace) -> int:
    import torch

    from stlic.checkpoints import save_model_checkpoint
    from stlic.output_files import check_writable_folder
    from stlic.training.checkpoint import CHECKPOINT_NAME, load_checkpoint, resume_target
    from stlic.training.distributed import init_distributed
    from stlic.training.finite import NonFiniteLossError
    from stlic.training.run_lock import RunLock
    from stlic.training.solver import STLICSolver

    if args.steps is not None and args.steps < 0:
        raise ValueError(f"--steps must be >= 0, got {args.steps}")
    if args.resume and args.force:
        raise ValueError("--resume and --force contradict each other (continue the run, or start over)")
    if args.resume and args.init:
        raise ValueError("--init starts a new run from trained weights; it cannot be combined with --resume")
    missing = [source for source in args.data or () if not Path(source).exists()]
    if missing:
        raise FileNotFoundError(f"training data {missing[0]!r} does not exist")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file; give a run folder")
    check_writable_folder(out, "--out")
    from stlic.devices import resolve_device

    device = resolve_device(args.device)
    context = init_distributed(device)
    if context.enabled and device.type == "cuda":
        device = torch.device("cuda", context.local_rank)
    with RunLock(out) if context.is_main else contextlib.nullcontext():
        if context.is_main:
            _prepare_run_folder(args, out)
        state = load_checkpoint(out, map_location=device) if args.resume else None
        config = _config(args, state)
        if config.freeze_main and state is None and not args.init:
            raise ValueError("freeze_main keeps the main network as --init loads it: pass --init CHECKPOINT "
                             "(without it the refiner would train behind an untrained codec)")
        if state is not None and args.config is not None:
            _check_same_model(config, state, out)
        if state is not None:
            target = resume_target(out / CHECKPOINT_NAME, state["step"], args.steps, config.schedule.total_steps)
            if target == state["step"]:
                print(f"nothing to train: {out} is already at step {target}; exporting its model", file=sys.stderr)
        solver = STLICSolver(config, device=device, out_dir=out, data=args.data, context=context)
        if state is not None:
            solver.load_state_dict(state, source=out / CHECKPOINT_NAME)
            print(f"resuming {out} from step {solver.step}", file=sys.stderr)
        elif args.init:
            from stlic.training.initialize import init_main_network

            report = init_main_network(solver.model, args.init)
            _check_rate_range(report, solver.model_config, args.accept_rate_range)
            print(report.summary(), file=sys.stderr)
            if context.is_main:
                report.save(out / "init.json")
        try:
            solver.fit(args.steps)
        except NonFiniteLossError as error:
            kept = (f"the last good checkpoint is kept in {out / CHECKPOINT_NAME}" if (out / CHECKPOINT_NAME).is_file()
                    else "no checkpoint had been written yet")
            print(f"stlic train: stopped: {error}; {kept}", file=sys.stderr)
            return 3
        if context.is_main:
            solver.model.update(force=True)
            path = save_model_checkpoint(out / "model.pt", solver.model.eval(), solver.model_config,
                                         extra={"step": solver.step, "train_config": config.to_dict()})
            print(f"exported {path} at step {solver.step}")
    return 0
