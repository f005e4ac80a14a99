"""Bi-WKV timings: linear-time blocked scan vs the O(T^2) formula vs a token-by-token loop.

All contenders run side by side in one process on the same inputs (B, T, C) with T = side^2,
forward alone and forward + backward. Writes reports/benchmarks/wkv.md (and .json).

    python benchmarks/wkv.py [--channels 32] [--batch 1] [--repeats 3] [--clock cpu|wall]

``--clock cpu`` (default) times one thread by process CPU time, which stays meaningful on a
shared, loaded machine; ``--clock wall`` uses wall-clock time with torch's default threads.

Contenders:
  linear      stlic.layers.wkv.bi_wkv (float32, default chunk)
  quadratic   the direct formula as a float32 (B, T, T, C) softmax; skipped when that tensor
              would exceed --max-quadratic elements (memory)
  loop        RWKV's sequential log-space recurrence, one Python step per token and direction;
              skipped above --max-loop tokens
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

from stlic.layers.wkv import bi_wkv, bi_wkv_reference

REPORT = Path(__file__).resolve().parents[1] / "reports" / "benchmarks" / "wkv"


def quadratic_float32(w, u, k, v):
    steps = k.shape[1]
    pos = torch.arange(steps, dtype=k.dtype)
    gap = (pos[:, None] - pos[None, :]).abs() - 1.0
    exponent = -gap[None, :, :, None] * w + k[:, None, :, :]
    eye = torch.eye(steps, dtype=torch.bool)[None, :, :, None]
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


def _time(fn: Callable[[], object], repeats: int, clock: Callable[[], float]) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        start = clock()
        fn()
        samples.append(clock() - start)
    return statistics.median(samples)


def _max_error(w, u, k, v, max_elements: float) -> float:
    """Max |bi_wkv - float64 reference| on as many channels as fit the quadratic memory cap."""
    batch, steps, _ = k.shape
    channels = max(1, min(k.shape[2], int(max_elements / 4 / (batch * steps * steps))))  # float64
    if batch * steps * steps > 4 * max_elements:
        return float("nan")
    w, u, k, v = w[:channels], u[:channels], k[..., :channels], v[..., :channels]
    return (bi_wkv(w, u, k, v).double() - bi_wkv_reference(w, u, k, v)).abs().max().item()


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-quadratic", type=float, default=1.5e8, help="elements of (B,T,T,C)")
    parser.add_argument("--max-loop", type=int, default=4096, help="tokens")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    args = parser.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.clock == "cpu":
        torch.set_num_threads(1)
    torch.manual_seed(0)
    rows = []
    for side in args.sides:
        steps = side * side
        w = torch.randn(args.channels) * 8 / steps
        u = torch.randn(args.channels) / steps
        k, v = torch.randn(2, args.batch, steps, args.channels)
        error = _max_error(w, u, k, v, args.max_quadratic)
        quad_ok = args.batch * steps * steps * args.channels <= args.max_quadratic
        impls = {"linear": bi_wkv, "quadratic": quadratic_float32 if quad_ok else None,
                 "loop": loop if steps <= args.max_loop else None}
        for backward in (False, True):
            times = {name: (_time(_runner(fn, w, u, k, v, backward), args.repeats, clock) if fn else None)
                     for name, fn in impls.items()}
            row = {"side": side, "tokens": steps, "pass": "fwd+bwd" if backward else "fwd",
                   **{f"{n}_ms": (t * 1e3 if t else None) for n, t in times.items()},
                   "quadratic/linear": times["quadratic"] / times["linear"] if times["quadratic"] else None,
                   "loop/linear": times["loop"] / times["linear"] if times["loop"] else None,
                   "max_abs_err_vs_float64": error}
            rows.append(row)
            print(json.dumps(row), flush=True)
    _write(rows, args)


def _fmt(value, spec: str) -> str:
    return "skipped" if value is None else format(value, spec)


def _write(rows, args) -> None:
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    lines = [
        "# Bi-WKV: linear-time scan vs O(T^2) formula vs token loop",
        "",
        f"`python benchmarks/wkv.py` on {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {args.clock} clock, "
        f"float32, 1-min load average at the end {os.getloadavg()[0]:.1f}, "
        f"B={args.batch}, C={args.channels}, median of {args.repeats}. Times in ms; ratios > 1 mean "
        "the linear scan is faster. Max error of `bi_wkv` (float32) against the float64 O(T^2) "
        "reference, on the channels that fit memory (nan: none fit). `skipped`: quadratic beyond "
        f"{args.max_quadratic:.1e} elements of (B,T,T,C) (memory), loop beyond {args.max_loop} tokens.",
        "",
        "| H x W | T | pass | linear | quadratic | loop | quadratic/linear | loop/linear | max err vs float64 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['side']}x{r['side']} | {r['tokens']} | {r['pass']} | {_fmt(r['linear_ms'], '.1f')} | "
            f"{_fmt(r['quadratic_ms'], '.1f')} | {_fmt(r['loop_ms'], '.1f')} | "
            f"{_fmt(r['quadratic/linear'], '.2f')} | {_fmt(r['loop/linear'], '.2f')} | "
            f"{_fmt(r['max_abs_err_vs_float64'], '.1e')} |"
        )
    REPORT.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {REPORT.with_suffix('.md')}")


if __name__ == "__main__":
    main()
