"""Bi-WKV timings: the default (factorised) path vs the previous log-scaled scan, the chunked
matmul form, the O(T^2) formula and a token-by-token loop.

All contenders run side by side in one process on the same inputs (B, T, C) with T = side^2,
forward alone and forward + backward, their samples interleaved. Writes
reports/benchmarks/wkv.md (and .json).

    python benchmarks/wkv.py [--shapes 8:32:16 ...] [--repeats 10] [--clock cpu|wall] [--device cpu]
                             [--model-patches 64 128]

A shape is batch:side:channels. The defaults are the tiny preset's Bi-RWKV stages at batch 8
(64 px crops: 32x32 and 16x16 maps of 16 channels, 8x8 of 24; 128 px crops double the sides),
then larger maps of 32 channels. ``--clock cpu`` (default) times one thread by process CPU
time, which stays meaningful on a shared, loaded machine; ``--clock wall`` uses wall-clock
time with torch's default threads (and synchronises CUDA).

``--model-patches``: also times one forward + backward of rate + MSE through the tiny preset's
main network (LALIC) at batch 8 on random crops of these sizes, with every Bi-WKV on
``method="scan"`` (before) and on the default (now): what a rate-distortion training step
gains.

Contenders (all float32):
  auto        stlic.layers.wkv.bi_wkv, the default: whole-sequence factorisation, cumsums
  scan        bi_wkv(method="scan"): the log-scaled blocked scan, the default before
  chunked     bi_wkv(method="chunked", chunk=64): prefix sums as chunked matmuls (for GPUs)
  quadratic   the direct formula as a (B, T, T, C) softmax; skipped when that tensor would
              exceed --max-quadratic elements (memory)
  loop        RWKV's sequential log-space recurrence, one Python step per token and direction;
              skipped above --max-loop tokens
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import time
from pathlib import Path
from typing import Callable

import torch

from stlic.layers.rwkv import set_wkv_mode
from stlic.layers.wkv import bi_wkv, bi_wkv_reference

REPORT = Path(__file__).resolve().parents[1] / "reports" / "benchmarks" / "wkv"


def quadratic_float32(w, u, k, v):
    steps = k.shape[1]
    pos = torch.arange(steps, dtype=k.dtype, device=k.device)
    gap = (pos[:, None] - pos[None, :]).abs() - 1.0
    exponent = -gap[None, :, :, None] * w + k[:, None, :, :]
    eye = torch.eye(steps, dtype=torch.bool, device=k.device)[None, :, :, None]
    exponent = torch.where(eye, (u + k)[:, None, :, :], exponent)
    return (torch.softmax(exponent, dim=2) * v[:, None, :, :]).sum(dim=2)


def _one_direction_loop(w, k, v):
    """Exclusive left sums (num, den) with a running max exponent p (RWKV's pp/aa/bb state)."""
    p = torch.full_like(k[:, 0], float("-inf"))
    num = torch.zeros_like(k[:, 0])
    den = torch.zeros_like(k[:, 0])
    out_p, out_num, out_den = [], [], []
    for t in range(k.shape[1]):
        out_p.append(p)
        out_num.append(num)
        out_den.append(den)
        decayed = p - w
        new_p = torch.maximum(decayed, k[:, t])
        keep = torch.exp(decayed - new_p)
        add = torch.exp(k[:, t] - new_p)
        num, den, p = keep * num + add * v[:, t], keep * den + add, new_p
    return torch.stack(out_p, 1), torch.stack(out_num, 1), torch.stack(out_den, 1)


def loop(w, u, k, v):
    lp, ln, ld = _one_direction_loop(w, k, v)
    rp, rn, rd = (t.flip(1) for t in _one_direction_loop(w, k.flip(1), v.flip(1)))
    sp = u + k
    top = torch.maximum(torch.maximum(lp, rp), sp).detach()
    el, er, es = torch.exp(lp - top), torch.exp(rp - top), torch.exp(sp - top)
    return (el * ln + er * rn + es * v) / (el * ld + er * rd + es)


def _time_interleaved(runs: dict[str, Callable[[], object]], repeats: int, clock, sync) -> dict[str, float]:
    """Seconds per call of each contender: the fastest of ``repeats`` samples, each sample
    timing enough calls to last about 20 ms, one sample of each contender in turn so that load
    drifts hit all alike (on a shared machine the fastest sample is the least disturbed)."""
    calls = {}
    for name, fn in runs.items():  # warm-up and calibration
        sync()
        start = clock()
        fn()
        sync()
        calls[name] = max(1, min(50, int(0.02 / max(clock() - start, 1e-6))))
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            sync()
            start = clock()
            for _ in range(calls[name]):
                fn()
            sync()
            best[name] = min(best[name], (clock() - start) / calls[name])
    return best


def _max_errors(impls, w, u, k, v, max_elements: float) -> dict[str, float]:
    """Max |impl - float64 reference| on as many channels as fit the reference's memory cap."""
    batch, steps, _ = k.shape
    channels = min(k.shape[2], int(max_elements / (batch * steps * steps)))
    if channels < 1:
        return {name: float("nan") for name in impls}
    w, u, k, v = w[:channels], u[:channels], k[..., :channels], v[..., :channels]
    ref = bi_wkv_reference(w, u, k, v)
    return {name: (fn(w, u, k, v).double() - ref).abs().max().item() for name, fn in impls.items()}


def _runner(impl, w, u, k, v, backward: bool):
    if not backward:
        def run():
            with torch.no_grad():
                impl(w, u, k, v)
        return run
    leaves = [t.detach().clone().requires_grad_(True) for t in (w, u, k, v)]
    upstream = torch.randn_like(v)

    def run():
        torch.autograd.grad((impl(*leaves) * upstream).sum(), leaves)
    return run


def _model_step_rows(patches, repeats, clock, sync, device) -> list[dict]:
    """Tiny LALIC forward + backward (rate + MSE), every Bi-WKV on "scan" vs "auto"."""
    from stlic.models import LALIC, PRESETS

    rows = []
    for patch in patches:
        torch.manual_seed(0)
        model = LALIC(PRESETS["tiny"]).to(device)
        x = torch.rand(8, 3, patch, patch, device=device)

        def step():
            out = model(x)
            bits = sum(-torch.log2(p).sum() for p in out.likelihoods.values())
            loss = bits / x[:, 0].numel() + 100 * torch.mean((out.x_hat - x) ** 2)
            model.zero_grad(set_to_none=True)
            loss.backward()

        def with_method(method):
            def run():
                set_wkv_mode(model, method=method)
                step()
            return run
        times = _time_interleaved({"scan": with_method("scan"), "auto": with_method("auto")},
                                  repeats, clock, sync)
        row = {"patch": patch, "scan_ms": times["scan"] * 1e3, "auto_ms": times["auto"] * 1e3,
               "scan/auto": times["scan"] / times["auto"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


DEFAULT_SHAPES = ["8:8:24", "8:16:16", "8:32:16", "8:16:24", "8:64:16", "1:64:32", "1:128:32"]
EXACT = {"auto": bi_wkv, "scan": functools.partial(bi_wkv, method="scan"),
         "chunked": functools.partial(bi_wkv, method="chunked", chunk=64)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=DEFAULT_SHAPES, help="batch:side:channels")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--max-quadratic", type=float, default=3e7, help="elements of (B,T,T,C)")
    parser.add_argument("--max-loop", type=int, default=256, help="tokens")
    parser.add_argument("--max-reference", type=float, default=5e7,
                        help="elements of (B,T,T,C') for the float64 reference of the error column")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model-patches", type=int, nargs="*", default=[64, 128])
    args = parser.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    if args.clock == "cpu":
        torch.set_num_threads(1)
    torch.manual_seed(0)
    rows = []
    for shape in args.shapes:
        batch, side, channels = (int(x) for x in shape.split(":"))
        steps = side * side
        w = (torch.randn(channels) * 8 / steps).to(args.device)
        u = (torch.randn(channels) / steps).to(args.device)
        k, v = torch.randn(2, batch, steps, channels, device=args.device)
        errors = _max_errors(EXACT, w, u, k, v, args.max_reference)
        quad_ok = batch * steps * steps * channels <= args.max_quadratic
        impls = {**EXACT, "quadratic": quadratic_float32 if quad_ok else None,
                 "loop": loop if steps <= args.max_loop else None}
        for backward in (False, True):
            runs = {name: _runner(fn, w, u, k, v, backward) for name, fn in impls.items() if fn}
            times = _time_interleaved(runs, args.repeats, clock, sync)
            row = {"batch": batch, "side": side, "channels": channels, "tokens": steps,
                   "pass": "fwd+bwd" if backward else "fwd",
                   **{f"{n}_ms": (times[n] * 1e3 if n in times else None) for n in impls},
                   **{f"{n}/auto": (times[n] / times["auto"] if n in times else None) for n in impls if n != "auto"},
                   **{f"{n}_max_err": errors[n] for n in EXACT}}
            rows.append(row)
            print(json.dumps(row), flush=True)
    model_rows = _model_step_rows(args.model_patches, args.repeats, clock, sync, args.device)
    _write(rows, model_rows, args)


def _fmt(value, spec: str) -> str:
    return "skipped" if value is None else format(value, spec)


def _write(rows, model_rows, args) -> None:
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.with_suffix(".json").write_text(json.dumps({"bi_wkv": rows, "tiny_model_step": model_rows}, indent=1))
    lines = [
        "# Bi-WKV: default (factorised) vs previous scan vs chunked matmul form vs O(T^2) vs loop",
        "",
        f"`python benchmarks/wkv.py{' --clock wall' if args.clock == 'wall' else ''}"
        f"{' --device ' + args.device if args.device != 'cpu' else ''}` on "
        f"{platform.processor() or platform.machine()} ({args.device}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), {args.clock} clock, float32, 1-min load average at "
        f"the end {os.getloadavg()[0]:.1f}, fastest of {args.repeats} interleaved samples of about 20 ms each. Times in ms; "
        "`scan` is the default before this change, `auto` the default now; ratios > 1 mean `auto` "
        "is faster. Max errors against the float64 O(T^2) reference, on the channels C' that fit "
        f"{args.max_reference:.1e} elements of (B,T,T,C') (nan: none fit). `skipped`: quadratic beyond "
        f"{args.max_quadratic:.1e} elements of (B,T,T,C) (memory), loop beyond {args.max_loop} tokens.",
        "",
        "| B | H x W | C | pass | scan (before) | auto (now) | scan/auto | chunked | chunked/auto "
        "| quadratic | loop | max err auto / scan / chunked |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['batch']} | {r['side']}x{r['side']} | {r['channels']} | {r['pass']} | "
            f"{_fmt(r['scan_ms'], '.2f')} | {_fmt(r['auto_ms'], '.2f')} | {_fmt(r['scan/auto'], '.2f')} | "
            f"{_fmt(r['chunked_ms'], '.2f')} | {_fmt(r['chunked/auto'], '.2f')} | "
            f"{_fmt(r['quadratic_ms'], '.1f')} | {_fmt(r['loop_ms'], '.1f')} | "
            f"{r['auto_max_err']:.1e} / {r['scan_max_err']:.1e} / {r['chunked_max_err']:.1e} |"
        )
    if model_rows:
        lines += [
            "",
            "Tiny preset main network (LALIC), batch 8, forward + backward of rate + 100 * MSE, every "
            "Bi-WKV on `method=\"scan\"` (before) or the default (now); ms per step:",
            "",
            "| crop | scan (before) | auto (now) | scan/auto |",
            "|---|---|---|---|",
            *(f"| {r['patch']} px | {r['scan_ms']:.0f} | {r['auto_ms']:.0f} | {r['scan/auto']:.2f} |"
              for r in model_rows),
        ]
    REPORT.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {REPORT.with_suffix('.md')}")


if __name__ == "__main__":
    main()
