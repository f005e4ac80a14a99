"""Static derive vs the online Balancer on ST-LIC: gradient shares over steps against a target Table I.

    python benchmarks/balancer_stlic.py --init runs/phase1/model.pt --steps 300 \
        --targets configs/targets/paper_table1.yaml [--config stlic_tiny] [--every 10] [--out reports/balancer]

Both runs start from the same weights (``--init``: a ``model.pt`` or training ``checkpoint.pt``, e.g. the
pretrained start of phase 2; without it, from scratch) and see the same batches and lambdas:

* **static** (the paper's procedure): probe the first ``--probe-steps`` steps at the config's weights,
  derive the coefficients once (``gradbalance.derive_coefficients``, rate range held), then train
  ``--steps`` steps with them, probing every ``--every`` steps to measure the shares;
* **online**: train ``--steps`` steps with ``balancer: {targets, every}`` (rate held), starting from the
  statically derived coefficients (``--online-start derived``, default: both runs start balanced, so
  the comparison is about holding the targets as shares drift) or from the config's
  (``--online-start config``: the balancer also has to find them, at most ``--max-change`` per update).

Prints and writes ``OUT/report.md`` (mean share and |share - target| over the second half, per
targeted cell, side by side), ``OUT/static_shares.png``, ``OUT/online_shares.png`` (shares per probed
step, dashed: target), ``OUT/online_weights.png``, and both runs as probe runs (``OUT/static``,
``OUT/online``: ``gradbalance plot`` redraws them).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def _solver(config, init: Path | None, data, device: str):
    from stlic.training.solver import STLICSolver

    solver = STLICSolver(config, device=device, data=data)
    if init is not None:
        solver.model.load_state_dict(_init_state(init))
    return solver


def _init_state(path: Path) -> dict:
    """The model weights of a training ``checkpoint.pt`` or of an exported ``model.pt``."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and "step" in state:
        return state["model"]
    from stlic.checkpoints import load_model_checkpoint

    return load_model_checkpoint(path)[0].state_dict()


def _probe_for(solver, every: int):
    from gradbalance import GradientProbe
    from stlic.probe_target import STLICProbeTarget

    target = STLICProbeTarget(solver=solver, description="")
    return GradientProbe(solver.model, target.groups, loss_order=target.loss_order, every=every,
                         ignore=target.ignored_parameters)


def static_run(args, config, targets):
    """Probe early at the config's weights, derive once, train with the derived weights (probed)."""
    from gradbalance import derive_coefficients
    from stlic.training.config import LOSS_NAMES

    solver = _solver(config, args.init, args.data, args.device)
    probe = _probe_for(solver, args.every_static)
    for _ in range(args.probe_steps):
        solver.run_step(solver.next_batch(), backward=probe.backward)
    rate = tuple(config.loss_weights.rate)
    derived = derive_coefficients(probe.table(), targets, fixed={"rate": rate}, current={"rate": rate})
    weights = dataclasses.replace(config.loss_weights, **{n: derived.coefficients[n] for n in LOSS_NAMES[1:]})
    solver = _solver(config.replace(loss_weights=weights), args.init, args.data, args.device)
    probe = _probe_for(solver, args.every)
    for _ in range(args.steps):
        solver.run_step(solver.next_batch(), backward=probe.backward)
    return probe.records, weights


def online_run(args, config, targets_path: str):
    from stlic.training.balancing import BalancerConfig

    balanced = config.replace(balancer=BalancerConfig(targets=targets_path, every=args.every, ema=args.ema,
                                                      max_change=args.max_change, law=args.law, gain=args.gain,
                                                      loss_values=args.loss_values))
    solver = _solver(balanced, args.init, args.data, args.device)
    for _ in range(args.steps):
        solver.run_step(solver.next_batch())
    return solver.balancing.balancer


def with_targets(records: pd.DataFrame, targets) -> pd.DataFrame:
    """Records plus ``share`` (%) and the targeted interval of each cell."""
    from gradbalance.balancer.spec import target_interval

    data = records.copy()
    data["share"] = 100 * data.norm / data.groupby(["step", "group"]).norm.transform("sum")
    present = data.dropna(subset=["share"]).groupby(["step", "group"]).loss.transform("count")
    intervals = [target_interval(targets, l, g, int(n)) if not math.isnan(s) else (math.nan, math.nan)
                 for l, g, n, s in zip(data.loss, data.group, present.reindex(data.index).fillna(0), data.share)]
    data["target_low"], data["target_high"] = zip(*intervals) if intervals else ([], [])
    return data


def second_half(records: pd.DataFrame, steps: int) -> pd.DataFrame:
    """Per targeted cell: target, mean share and |mean share - target| over probed steps >= steps/2."""
    late = records[(records.step >= steps // 2) & records.target_low.notna()]
    cells = late.groupby(["group", "loss"]).agg(target=("target_low", "first"), high=("target_high", "first"),
                                                 share=("share", "mean"), std=("share", "std"))
    cells["miss"] = (cells.share - cells.high).clip(lower=0) + (cells.target - cells.share).clip(lower=0)
    return cells


def report(args, static: pd.DataFrame, online: pd.DataFrame, weights: dict, seconds: dict, out: Path) -> str:
    s, o = second_half(static, args.steps), second_half(online.history, args.steps)
    rows = ["| group | loss | target % | static share % | static miss pp | online share % | online miss pp |",
            "|---|---|---:|---:|---:|---:|---:|"]
    for (group, loss), cell in s.iterrows():
        other = o.loc[(group, loss)] if (group, loss) in o.index else None
        rows.append(f"| {group} | {loss} | {cell.target:.2f} | {cell.share:.2f} ± {cell['std']:.2f} | {cell.miss:.2f} | "
                    + (f"{other.share:.2f} ± {other['std']:.2f} | {other.miss:.2f} |" if other is not None else "- | - |"))
    coefficient_rows = ["| loss | static (derived once) | online (start) | online (final) |", "|---|---:|---:|---:|"]
    for loss, value in online.weights.items():
        coefficient_rows.append(f"| {loss} | {weights[loss]:.4g} | "
                                f"{online.history.query('loss == @loss').coefficient.iloc[0]:.4g} | {value:.4g} |")
    command = "python benchmarks/balancer_stlic.py " + " ".join(sys.argv[1:])
    return "\n".join([
        "# Static derive vs online Balancer on ST-LIC", "",
        f"`{command}`", "",
        f"Config `{args.config}`, init `{args.init or 'none (from scratch)'}`, targets `{args.targets}` "
        f"(copied to `targets.yaml`), {args.steps} steps per run, shares probed every {args.every} steps (static: derived from the first "
        f"{args.probe_steps} steps probed every {args.every_static}), online start: {args.online_start} coefficients, balancer law {args.law} (gain {args.gain}, loss-value channel {'on' if args.loss_values else 'off'}), EMA {args.ema}, max change {args.max_change}x per update, seed {args.seed}, device {args.device}. "
        f"Wall time: static {seconds['static']:.0f} s (probe + derive + train), online {seconds['online']:.0f} s.", "",
        f"Mean share (± std over probed steps) and its miss of the target over steps {args.steps // 2}..{args.steps}:", "",
        *rows, "",
        f"Largest miss: static {s.miss.max():.2f} pp, online {o.miss.max():.2f} pp "
        f"(mean {s.miss.mean():.2f} vs {o.miss.mean():.2f} pp).", "",
        "Coefficients (rate: multiplier of the lambda drawn per batch, held):", "", *coefficient_rows, "",
        "Figures: `static_shares.png`, `online_shares.png` (per probed step, dashed: target), "
        "`online_weights.png`. Data: `static/`, `online/` (`gradbalance plot` redraws them).", ""])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="stlic_tiny")
    parser.add_argument("--init", type=Path, help="model.pt or checkpoint.pt to start both runs from")
    parser.add_argument("--targets", default="configs/targets/paper_table1.yaml")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=10, help="probe / balance every K steps")
    parser.add_argument("--probe-steps", type=int, default=50, help="static: steps probed before deriving")
    parser.add_argument("--every-static", type=int, default=5, help="static: probe every K of those steps")
    parser.add_argument("--ema", type=float, default=0.9)
    parser.add_argument("--max-change", type=float, default=2.0, help="online: largest factor per update")
    parser.add_argument("--law", choices=("controller", "resolve"), default="controller", help="online: update law")
    parser.add_argument("--gain", type=float, default=0.1, help="online: the controller's integral gain")
    parser.add_argument("--no-loss-values", dest="loss_values", action="store_false",
                        help="controller without its per-step loss-value channel (the law before it)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (batches, lambdas, initialisation)")
    parser.add_argument("--online-start", choices=("derived", "config"), default="derived",
                        help="online: start from the statically derived coefficients or the config's")
    parser.add_argument("--data", nargs="+")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "balancer")
    args = parser.parse_args(argv)

    import torch
    import yaml

    from gradbalance.report.balance_plots import plot_shares_against_targets, plot_weights_over_steps
    from gradbalance.io.run import save_run
    from stlic.training.balancing import load_targets
    from stlic.training.config import LOSS_NAMES, load_config

    if args.device == "cpu":
        torch.set_num_threads(1)  # the tiny model gains nothing from intra-op threads on shared cores
    config = load_config(args.config).replace(seed=args.seed)
    targets = load_targets(args.targets)
    start = time.perf_counter()
    static_records, derived = static_run(args, config, targets)
    seconds = {"static": time.perf_counter() - start}
    start = time.perf_counter()
    online = online_run(args, config.replace(loss_weights=derived) if args.online_start == "derived" else config,
                        str(args.targets))
    seconds["online"] = time.perf_counter() - start

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "targets.yaml").write_text(yaml.safe_dump(targets, sort_keys=False))  # provenance
    static = with_targets(static_records, targets)
    save_run(out / "static", static, pd.DataFrame(), {"loss_order": list(LOSS_NAMES), "groups": ["main", "refiner"]})
    online.save(out / "online", {"model": "stlic"})
    order = {"loss_order": LOSS_NAMES, "group_order": ("main", "refiner")}
    plot_shares_against_targets(static, out / "static_shares.png", **order)
    plot_shares_against_targets(online.history, out / "online_shares.png", **order)
    plot_weights_over_steps(online.history, out / "online_weights.png", LOSS_NAMES)
    static_weights = {"rate": 1.0, **{n: getattr(derived, n) for n in LOSS_NAMES[1:]}}
    text = report(args, static, online, static_weights, seconds, out)
    (out / "report.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
