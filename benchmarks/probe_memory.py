"""Peak memory of a probed training step on the full ST-LIC model (CPU), side by side.

Each variant runs in a fresh process: the ``stlic`` probe target (``--preset full``, the paper's
73M-parameter model; batch 1, 128 px crops (the smallest multiple of 64 the perceptual losses take) so that
the parameters, not the activations, dominate) does one warm-up step, then one measured training
step (forward, backward, clip, AdamW, aux and discriminator steps) with

    plain      sum(w_i L_i).backward()          (no measurement)
    probe      GradientProbe.backward             (raw norms only)
    optimizer  GradientProbe(..., optimizer=AdamW)  (+ optimizer-aware norms)
    cosine     GradientProbe(..., cosine=True)      (+ pairwise cosines)

The peak resident memory of the measured step (Linux ``VmHWM``, reset through
``/proc/self/clear_refs`` just before it; glibc returns large blocks at once with
``MALLOC_MMAP_THRESHOLD_=65536``) minus the memory held before it is reported in units of the
trained parameters' size. ``--before DIR`` also runs each variant against an older ``gradbalance``
package in DIR (e.g. ``git archive <commit> gradbalance | tar -x -C DIR``), side by side.

Writes reports/benchmarks/probe_memory.{md,json}.
Run: python benchmarks/probe_memory.py [--before DIR] [--preset full] [--patch 128]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "reports" / "benchmarks" / "probe_memory"
VARIANTS = ("plain", "probe", "optimizer", "cosine")

CHILD = r"""
import json, sys, torch
from gradbalance import GradientProbe
from gradbalance.targets.target import make_target

variant, preset, patch, warmup = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

def kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

target = make_target("stlic", preset=preset, device="cpu", batch_size=1, patch_size=patch)
plain = lambda losses, weights: sum(weights[k] * v for k, v in losses.items()).backward()
if warmup:
    target.train_step(0, plain)  # warm-up: Adam state, lazy buffers
backward = plain
if variant != "plain":
    probe = GradientProbe(target.model, target.groups, loss_order=target.loss_order,
                          optimizer=target.optimizer if variant == "optimizer" else None,
                          cosine=variant == "cosine", ignore=getattr(target, "ignored_parameters", ()))
    backward = probe.backward
trained = sum(p.numel() * p.element_size() for g in target.optimizer.param_groups for p in g["params"])
before = kib("VmRSS:")
open("/proc/self/clear_refs", "w").write("5")
target.train_step(1, backward)
peak = kib("VmHWM:")
print(json.dumps(dict(variant=variant, extra_peak_bytes=peak - before, param_bytes=trained)))
"""


def run(variant: str, pythonpath: str, preset: str, patch: int, warmup: bool) -> dict:
    env = dict(os.environ, PYTHONPATH=pythonpath, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-P", "-c", CHILD, variant, preset, str(patch), str(int(warmup))],
                          capture_output=True,
                          text=True, env=env, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(f"{variant} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="folder holding an older gradbalance package to compare with")
    parser.add_argument("--preset", default="full")
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--no-warmup", action="store_true", help="skip the warm-up step (Adam's state is then "
                        "allocated in the measured step, 2 x params in every variant)")
    args = parser.parse_args()
    versions = {"this tree": str(ROOT)}
    if args.before:
        versions = {"before": f"{Path(args.before).resolve()}{os.pathsep}{ROOT}", **versions}
    results: dict = {name: {} for name in versions}
    for v in args.variants:
        for name, path in versions.items():
            results[name][v] = run(v, path, args.preset, args.patch, not args.no_warmup)
            print(name, json.dumps(results[name][v]), flush=True)
    param_bytes = next(iter(results.values()))[args.variants[0]]["param_bytes"]
    header = "| variant | " + " | ".join(f"{n}: extra peak (x params)" for n in results) + " |"
    lines = [f"# Peak memory of one training step, ST-LIC preset {args.preset} on CPU",
             "", f"Trained parameters: {param_bytes / 2**20:.0f} MiB; batch 1, {args.patch} px crop; "
             "extra peak = peak RSS of the step minus RSS before it, in units of the parameters' size.",
             f"Command: `python benchmarks/probe_memory.py{' --before DIR' if args.before else ''} "
             f"--preset {args.preset} --patch {args.patch} --variants {' '.join(args.variants)}"
             f"{' --no-warmup' if args.no_warmup else ''}`", "", header, "|---|" + "---:|" * len(results)]
    for v in args.variants:
        cells = [f"{r[v]['extra_peak_bytes'] / param_bytes:.2f} ({r[v]['extra_peak_bytes'] / 2**20:.0f} MiB)"
                 for r in results.values()]
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.with_suffix(".md").write_text(text)
    REPORT.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
