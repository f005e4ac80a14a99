"""Does ``precision: bf16`` train as well as fp32? Two runs side by side, then one fp32 evaluation.

    python benchmarks/bf16_training.py [--config stlic_probe_cpu] [--steps 1000] [--eval-crops 32]

One process, one intra-op thread: two solvers with the same config, seed and batches, one in fp32
and one with ``precision: bf16`` (autocast: VGG trunk, refiner, main network and discriminator in
bf16; rate, L1/L2, LPIPS heads, Wasserstein statistics and GAN losses in float32), both from the
shipped rate-distortion start (``pretrained/lalic_tiny_rd``), step alternately for ``--steps``
steps (so the seconds per step are a side-by-side ratio). Both models are then evaluated in fp32 on
the same ``--eval-crops`` fixed crops of the training data (their first crop per image, in order)
at the middle QVRF level: estimated bpp, PSNR of the decoder and refined outputs, and ST-LPIPS(vgg)
of the refined output. "Within noise" is judged against the standard error of the per-crop
differences.

Writes reports/benchmarks/bf16_training.md.
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time
from pathlib import Path

from report_file import publish

REPORT = Path(__file__).resolve().parents[1] / "reports" / "benchmarks" / "bf16_training.md"


def _evaluate(solver, crops) -> dict[str, list[float]]:
    import torch

    from stlic.losses import LPIPSLoss

    lpips = solver.objective.perceptual.lpips if solver.objective.perceptual_on else LPIPSLoss("vgg")
    model = solver.model.eval()
    level = (model.config.n_levels - 1) / 2
    scores = {"bpp": [], "psnr_decoded": [], "psnr_refined": [], "st_lpips_refined": []}
    with torch.no_grad():
        for x in crops:
            x = x[None]
            out = model(x, level=level)
            pixels = x.shape[-2] * x.shape[-1]
            bpp = sum(-torch.log2(v).sum() for v in out.likelihoods.values()) / pixels
            scores["bpp"].append(float(bpp))
            for name, y in (("psnr_decoded", out.x_hat), ("psnr_refined", out.x_refined)):
                mse = torch.mean((y.clamp(0, 1) - x) ** 2)
                scores[name].append(float(-10 * torch.log10(mse)))
            scores["st_lpips_refined"].append(float(lpips(out.x_refined.clamp(0, 1), x)))
    model.train()
    return scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="stlic_probe_cpu")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--eval-crops", type=int, default=32)
    parser.add_argument("--out", type=Path, default=REPORT)
    args = parser.parse_args()

    import torch

    from stlic.paths import TINY_RD_CHECKPOINT, resolve_config
    from stlic.training.config import TrainConfig, load_config
    from stlic.training.data import ImageFolder, default_data_sources
    from stlic.training.initialize import init_main_network
    from stlic.training.solver import STLICSolver

    torch.set_num_threads(1)
    base = load_config(resolve_config(args.config)).to_dict()
    solvers = {}
    for precision in ("fp32", "bf16"):
        config = copy.deepcopy(base)
        config.update(precision=precision)
        solver = STLICSolver(TrainConfig.from_dict(config))
        init_main_network(solver.model, TINY_RD_CHECKPOINT)
        solvers[precision] = solver
    seconds = {p: 0.0 for p in solvers}
    for step in range(args.steps):
        batch = solvers["fp32"].next_batch()
        solvers["bf16"].next_batch()  # keep its data stream in step
        for precision, solver in solvers.items():
            start = time.perf_counter()
            solver.run_step(batch, read=(step + 1) % 50 == 0)
            seconds[precision] += time.perf_counter() - start
        if (step + 1) % 100 == 0:
            print(f"step {step + 1}: fp32 {seconds['fp32'] / (step + 1):.3f} s/step, "
                  f"bf16 {seconds['bf16'] / (step + 1):.3f} s/step", flush=True)
    patch = base["schedule"]["stages"][0]["patch_size"]
    dataset = ImageFolder(default_data_sources(), max(patch, 64), "pad")
    generator = torch.Generator().manual_seed(1234)
    crops = [dataset[i % len(dataset)] for i in torch.randperm(len(dataset), generator=generator).tolist()]
    crops = (crops * math.ceil(args.eval_crops / len(crops)))[: args.eval_crops]
    scores = {p: _evaluate(s, crops) for p, s in solvers.items()}

    lines = ["# bf16 against fp32 training: 1,000 steps side by side, evaluated in fp32", "",
             f"`python benchmarks/bf16_training.py --config {args.config} --steps {args.steps} "
             f"--eval-crops {args.eval_crops}`", "",
             f"Config `{args.config}` from the shipped RD start, one intra-op thread, load average "
             f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores at the end. Seconds per step: fp32 "
             f"{seconds['fp32'] / args.steps:.3f}, bf16 {seconds['bf16'] / args.steps:.3f} "
             f"(fp32 / bf16 = {seconds['fp32'] / seconds['bf16']:.2f}x).", "",
             f"{len(crops)} fixed {dataset.patch_size} px crops of the training data, middle QVRF level, fp32 "
             "evaluation. Difference = bf16 - fp32, with the standard error of the per-crop differences:", "",
             "| metric | fp32 | bf16 | difference | standard error | within 2 s.e. |", "|---|---:|---:|---:|---:|---|"]
    for name in scores["fp32"]:
        a, b = scores["fp32"][name], scores["bf16"][name]
        diffs = [y - x for x, y in zip(a, b)]
        mean = sum(diffs) / len(diffs)
        se = (sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1) / len(diffs)) ** 0.5
        lines.append(f"| {name} | {sum(a) / len(a):.4f} | {sum(b) / len(b):.4f} | {mean:+.4f} | {se:.4f} | "
                     f"{'yes' if abs(mean) <= 2 * se else 'no'} |")
    return publish(args.out, lines)


if __name__ == "__main__":
    sys.exit(main())
