"""Peak memory of compress / decompress per pixel, measured beside the estimate of stlic.codec.memory.

Each (preset, call) runs in a fresh process (freed memory retained, as ``stlic compress`` runs;
one thread): the model codes a 64x64 warm-up image, then the measured call codes a random
SIZE x SIZE image (decompress reads the file its encode run wrote). Reported: the growth of the
peak resident size (``ru_maxrss``) during the call per padded pixel, the estimate
(:func:`stlic.codec.memory.coding_memory`) per pixel, and their ratio.

Writes reports/benchmarks/coding_memory.{md,json}.
Run: OMP_NUM_THREADS=1 python benchmarks/coding_memory.py [--presets tiny small full] [--size 1024]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "reports" / "benchmarks" / "coding_memory"

CHILD = r"""
import json, resource, sys, torch
from stlic.allocator import retain_freed_memory
from stlic.codec.codec import compress_image, decompress_image
from stlic.models import STLIC

retain_freed_memory()
preset, size, call, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
torch.manual_seed(0)
model = STLIC(preset).eval()
model.update(force=True)
image = torch.rand(3, size, size, generator=torch.Generator().manual_seed(1))
decompress_image(model, compress_image(model, torch.rand(3, 64, 64), 0.0))  # warm-up
data = open(path, "rb").read() if call == "decompress" else None
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
if call == "compress":
    open(path, "wb").write(compress_image(model, image, 0.0))
else:
    decompress_image(model, data)
print(json.dumps({"peak_growth": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before}))
"""


def measure(preset: str, size: int, call: str, path: str) -> int:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", CHILD, preset, str(size), call, path], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_growth"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small", "full"])
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    from stlic.codec.memory import coding_memory
    from stlic.models import PRESETS

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for preset in args.presets:
            path = str(Path(folder) / f"{preset}.stlic")
            for call in ("compress", "decompress"):
                growth = measure(preset, args.size, call, path)
                pixels = (-(-args.size // 64) * 64) ** 2
                estimate = coding_memory(PRESETS[preset], args.size, args.size, decode=call == "decompress")
                rows.append({"preset": preset, "call": call, "size": args.size, "measured_bytes_per_pixel": growth / pixels,
                             "estimated_bytes_per_pixel": estimate / pixels, "estimate_over_measured": estimate / growth})
                print(rows[-1], flush=True)
    lines = [f"# Coding memory: measured peak growth against the estimate ({args.size}x{args.size}, CPU)", "",
             "| preset | call | measured B/px | estimated B/px | estimate / measured |", "|---|---|---:|---:|---:|"]
    lines += [f"| {r['preset']} | {r['call']} | {r['measured_bytes_per_pixel']:.0f} | {r['estimated_bytes_per_pixel']:.0f} "
              f"| {r['estimate_over_measured']:.2f} |" for r in rows]
    lines += ["", f"Reproduce: `OMP_NUM_THREADS=1 python benchmarks/coding_memory.py --presets {' '.join(args.presets)} "
              f"--size {args.size}`"]
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.with_suffix(".md").write_text("\n".join(lines) + "\n")
    REPORT.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
