"""How exactly ``probe.backward`` reproduces a plain backward's ``.grad``: float64, float32, bf16 autocast.

The probe differentiates each loss once and accumulates ``w_i g_i``; a plain backward differentiates
``sum_i w_i L_i``. Mathematically equal, the two differ by rounding: the summation order in float32 /
float64, and bf16 arithmetic under ``torch.autocast``. On one forward (the same graph, so the same
noise and batch) this measures ``||g_probe - g_plain|| / ||g_plain||`` over all parameters, and the
largest per-parameter-tensor relative difference, on CompressAI's ScaleHyperprior, max over batches.

Writes reports/benchmarks/probe_precision.{md,json}.
Run: OMP_NUM_THREADS=1 python benchmarks/probe_precision.py [--batches 3] [--device cpu]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from pathlib import Path

import torch

from gradbalance import GradientProbe

REPORT = Path(__file__).resolve().parents[1] / "reports" / "benchmarks" / "probe_precision"


def measure(mode: str, batches: int, device: str) -> dict:
    from compressai.models import ScaleHyperprior

    torch.manual_seed(0)
    dtype = torch.float64 if mode == "float64" else torch.float32
    model = ScaleHyperprior(N=32, M=48).to(device, dtype)
    groups = {"g_a": model.g_a, "g_s": model.g_s, "hyper": r"^h_[as]\.", "entropy": r"^entropy_bottleneck\."}
    probe = GradientProbe(model, groups, ignore=[model.entropy_bottleneck.quantiles])
    params = [p for n, p in model.named_parameters() if not n.endswith("quantiles")]
    weights = {"bpp": 1.0, "mse": 650.25}
    total, worst = 0.0, 0.0
    for _ in range(batches):
        x = torch.rand(2, 3, 64, 64, device=device, dtype=dtype)
        autocast = (torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
                    if mode == "bf16 autocast" else contextlib.nullcontext())
        with autocast:
            out = model(x)
            bits = sum(torch.log(l.to(dtype)).sum() for l in out["likelihoods"].values()) / -math.log(2)
            losses = {"bpp": bits / (2 * 64 * 64), "mse": (out["x_hat"].to(dtype) - x).square().mean()}
        plain = torch.autograd.grad(sum(weights[k] * v for k, v in losses.items()), params, retain_graph=True)
        model.zero_grad(set_to_none=True)
        probe.backward(losses, weights)
        probed = [p.grad for p in params]
        diff = math.sqrt(sum(float((a - b).double().square().sum()) for a, b in zip(probed, plain)))
        norm = math.sqrt(sum(float(b.double().square().sum()) for b in plain))
        total = max(total, diff / norm)
        worst = max(worst, max(float((a - b).double().norm() / b.double().norm()) for a, b in zip(probed, plain)
                               if float(b.double().norm()) > 0))
    return dict(mode=mode, relative=total, worst_tensor=worst)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=REPORT)
    args = parser.parse_args()
    rows = [measure(mode, args.batches, args.device) for mode in ("float64", "float32", "bf16 autocast")]
    for r in rows:
        print(f"{r['mode']}: {r['relative']:.2e} (worst tensor {r['worst_tensor']:.2e})")
    meta = dict(torch=torch.__version__, device=args.device, batches=args.batches,
                date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=2))
    lines = ["# probe.backward against a plain backward: relative difference of .grad", "",
             f"{meta['date']}, torch {meta['torch']}, {args.device}, ScaleHyperprior N=32 M=48, 2x64px, max over "
             f"{args.batches} batches, the same forward for both. Command: `OMP_NUM_THREADS=1 python "
             "benchmarks/probe_precision.py`.", "",
             "| numerics | ‖g_probe − g_plain‖ / ‖g_plain‖ | worst parameter tensor |", "|---|---:|---:|"]
    lines += [f"| {r['mode']} | {r['relative']:.1e} | {r['worst_tensor']:.1e} |" for r in rows]
    lines += ["", "Equal up to the rounding of the arithmetic: summation order in float64/float32, bf16 "
              "products and sums in the autocast backward.", ""]
    args.out.with_suffix(".md").write_text("\n".join(lines))
    print(f"written {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
