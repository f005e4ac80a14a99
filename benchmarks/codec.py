"""Encode / decode wall time and peak memory of the real ST-LIC codec beside CompressAI's ELIC,
same image, same run.

    python benchmarks/codec.py [--image PATH] [--preset full] [--repeats 1] [--large-megapixels 2] [--system-malloc]

Both models are UNTRAINED (random weights, ``update(force=True)``): the timings are those of
the real networks and rANS coders, but the bitrates say nothing about compression quality.
ST-LIC times the whole file path (container, fingerprint, LALIC, rANS, UNet refiner);
ELIC (``compressai.models.Elic2022Official``) times ``compress`` / ``decompress`` on the image
padded to a multiple of 64. The two models' calls alternate, so a shared machine's changing
load hits both alike. Rows: ST-LIC's portable coding (float64 entropy parameters, the default),
its decode of ``x_hat`` alone (``stlic decompress --decoder-output``: no refiner), and the
float32 parameter path, which like ELIC's is not reproducible across devices. Both codecs run
in one process under the allocator setting of ``stlic compress`` (``stlic.allocator``: freed
memory retained); ``--system-malloc`` keeps glibc's defaults and writes ``codec_system_malloc.*``. Peak RSS is sampled every 5 ms during each call (the process holds
~1 GB before any call: torch and CompressAI's imports). Then: a per-stage breakdown of ST-LIC
coding, the time and bytes of the float64 entropy-parameter path against float32, and both
codecs on the image upscaled to ``--large-megapixels``. Writes ``reports/benchmarks/codec.md``
and ``codec.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from stlic.allocator import retain_freed_memory
from stlic.codec.codec import compress_image, decompress_image
from stlic.codec.image_io import read_image
from stlic.output_files import atomic_write_text
from stlic.models import STLIC, pad_to_multiple
from stlic.paths import REPO_ROOT, default_train_images, shared_data

REPORT_DIR = REPO_ROOT / "reports" / "benchmarks"


def default_image() -> Path:
    kodak = shared_data("kodak")
    if kodak is not None and (kodak / "kodim01.png").is_file():
        return kodak / "kodim01.png"
    return default_train_images()[0]


def rss_mb() -> float:
    """Resident set size of this process now (Linux /proc)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRss:
    """Largest RSS (MB) seen while the ``with`` block runs, sampled every 5 ms by a thread."""

    def __enter__(self) -> "PeakRss":
        self.peak, self._stop = rss_mb(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def timed(fn) -> tuple[float, object, float]:
    """Wall time (s) of one call, its result and the peak RSS (MB) during it."""
    with PeakRss() as memory:
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
    return seconds, result, memory.peak


class StlicRunner:
    """The real file path: container, fingerprint, LALIC, rANS, UNet refiner."""

    def __init__(self, image: torch.Tensor, preset: str, parameter_dtype: torch.dtype = torch.float64) -> None:
        torch.manual_seed(0)  # the same untrained weights in every section of the report
        self.model = STLIC(preset).eval()
        self.model.update(force=True)
        self.model.main.parameter_dtype = parameter_dtype
        self.image = image

    def encode(self) -> bytes:
        return compress_image(self.model, self.image, 0.0)

    def decode(self, data: bytes) -> torch.Tensor:
        return decompress_image(self.model, data).x_refined

    def decode_x_hat(self, data: bytes) -> torch.Tensor:
        return decompress_image(self.model, data, refine=False).x_hat

    def reconstruct(self) -> torch.Tensor:
        return self.model.reconstruct(self.image[None], 0.0).x_refined


class ElicRunner:
    """CompressAI's ``Elic2022Official`` on the image padded to a multiple of 64."""

    def __init__(self, image: torch.Tensor) -> None:
        from compressai.models import Elic2022Official

        torch.manual_seed(0)
        self.model = Elic2022Official().eval()
        self.model.update(force=True)
        self.image, self.x = image, pad_to_multiple(image[None])

    def encode(self) -> dict:
        return self.model.compress(self.x)

    def decode(self, out: dict) -> torch.Tensor:
        x_hat = self.model.decompress(out["strings"], out["shape"])["x_hat"]
        return x_hat[..., : self.image.shape[-2], : self.image.shape[-1]]


def params_m(model: torch.nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


@torch.no_grad()
def run_interleaved(image: torch.Tensor, preset: str, repeats: int) -> dict:
    """Alternate ST-LIC and ELIC calls so both see the same machine load; medians per step."""
    stlic, elic = StlicRunner(image, preset), ElicRunner(image)
    fast = StlicRunner(image, preset, torch.float32)
    keys = ("stlic_encode", "elic_encode", "stlic_decode", "stlic_decode_x_hat", "elic_decode",
            "stlic_encode_float32", "stlic_decode_x_hat_float32", "stlic_reconstruct")
    times: dict[str, list[float]] = {key: [] for key in keys}
    peaks: dict[str, float] = {key: 0.0 for key in keys}

    def step(key, fn):
        seconds, result, peak = timed(fn)
        times[key].append(seconds)
        peaks[key] = max(peaks[key], peak)
        return result

    for _ in range(repeats):
        data = step("stlic_encode", stlic.encode)
        out = step("elic_encode", elic.encode)
        assert step("stlic_decode", lambda: stlic.decode(data)).shape[-2:] == image.shape[-2:]
        assert step("stlic_decode_x_hat", lambda: stlic.decode_x_hat(data)).shape[-2:] == image.shape[-2:]
        assert step("elic_decode", lambda: elic.decode(out)).shape[-2:] == image.shape[-2:]
        data32 = step("stlic_encode_float32", fast.encode)
        assert step("stlic_decode_x_hat_float32", lambda: fast.decode_x_hat(data32)).shape[-2:] == image.shape[-2:]
        step("stlic_reconstruct", stlic.reconstruct)
        print({key: round(values[-1], 2) for key, values in times.items()}, flush=True)
    median = {key: statistics.median(values) for key, values in times.items()}
    return {
        "stlic": {"encode_s": median["stlic_encode"], "decode_s": median["stlic_decode"],
                  "decode_x_hat_s": median["stlic_decode_x_hat"],
                  "encode_float32_s": median["stlic_encode_float32"],
                  "decode_x_hat_float32_s": median["stlic_decode_x_hat_float32"],
                  "reconstruct_s": median["stlic_reconstruct"], "bytes": len(data), "bytes_float32": len(data32),
                  "params_M": params_m(stlic.model), "encode_peak_MB": peaks["stlic_encode"],
                  "decode_peak_MB": peaks["stlic_decode"]},
        "elic": {"encode_s": median["elic_encode"], "decode_s": median["elic_decode"],
                 "bytes": sum(len(s) for group in out["strings"] for s in group), "params_M": params_m(elic.model),
                 "encode_peak_MB": peaks["elic_encode"], "decode_peak_MB": peaks["elic_decode"]},
        "samples_s": times,
    }


@torch.no_grad()
def stage_breakdown(image: torch.Tensor, preset: str) -> dict:
    """Seconds of each stage of one ST-LIC encode, and the float64 parameter path against float32
    (time of h_s + SCCTX coding, bytes of the y string)."""
    model = StlicRunner(image, preset).model
    main, x = model.main, pad_to_multiple(image[None])
    stages: dict[str, float] = {}

    def stage(name, fn):
        seconds, result, _ = timed(fn)
        stages[name] = seconds
        return result

    y = stage("g_a", lambda: main.g_a(x))
    z_symbols = stage("h_a", lambda: main.entropy_bottleneck.quantize(main.h_a(y), "symbols", main.z_medians()))
    y_bytes = {}
    for dtype in (torch.float32, torch.float64):
        main.parameter_dtype = dtype
        name = str(dtype).removeprefix("torch.")
        main._parameter_path(z_symbols)  # builds and caches the copy outside the timing

        def code():
            entropy_model, hyper = main._parameter_path(z_symbols)
            return entropy_model.compress(y.to(dtype), hyper, 0.0)

        y_string, y_hat = stage(f"h_s + SCCTX coding ({name})", code)
        y_bytes[name] = len(y_string)
    x_hat = stage("g_s", lambda: main.g_s(y_hat.float()))
    stage("refiner", lambda: model.refiner(x_hat))
    return {"stages_s": stages, "y_bytes": y_bytes}


@torch.no_grad()
def network_macs(image: torch.Tensor, preset: str) -> dict:
    """Giga multiply-accumulates of the matrix products and convolutions of each call
    (``torch.utils.flop_counter``; element-wise work is not counted): how much of the time ratio
    the networks' size explains."""
    from torch.utils.flop_counter import FlopCounterMode

    stlic, elic = StlicRunner(image, preset), ElicRunner(image)
    data, out = stlic.encode(), elic.encode()
    calls = {"stlic_encode": stlic.encode, "stlic_decode": lambda: stlic.decode(data),
             "stlic_decode_x_hat": lambda: stlic.decode_x_hat(data), "elic_encode": elic.encode,
             "elic_decode": lambda: elic.decode(out)}
    macs = {}
    for name, call in calls.items():
        with FlopCounterMode(display=False) as counter:
            call()
        macs[name] = counter.get_total_flops() / 2e9
    return macs


def large_size(height: int, width: int, megapixels: float) -> tuple[int, int]:
    """(H, W) of about ``megapixels`` with the aspect of ``height`` x ``width``."""
    scale = (megapixels * 1e6 / (height * width)) ** 0.5
    return round(height * scale), round(width * scale)


def large_image(image: torch.Tensor, megapixels: float) -> torch.Tensor:
    """``image`` upscaled (bicubic) to about ``megapixels``."""
    size = large_size(image.shape[-2], image.shape[-1], megapixels)
    return F.interpolate(image[None], size=size, mode="bicubic", align_corners=False)[0].clamp(0, 1)


@torch.no_grad()
def large_child(codec: str, image: torch.Tensor, preset: str) -> dict:
    """One encode and decode of ``codec`` (run in a fresh process, so its peak RSS is its own)."""
    baseline = rss_mb()
    runner = StlicRunner(image, preset) if codec == "stlic" else ElicRunner(image)
    encode_s, data, encode_peak = timed(runner.encode)
    decode_s, _, decode_peak = timed(lambda: runner.decode(data))
    result = {"encode_s": encode_s, "decode_s": decode_s, "encode_peak_MB": encode_peak,
              "decode_peak_MB": decode_peak, "baseline_MB": baseline}
    if codec == "stlic":
        result["decode_x_hat_s"] = timed(lambda: runner.decode_x_hat(data))[0]
    return result


def run_large(image: torch.Tensor, image_path: Path, preset: str, megapixels: float, system_malloc: bool) -> dict:
    """Each codec on ``image`` (read from ``image_path``) upscaled to ``megapixels``, each in its own
    process (the peak resident sizes are then each codec's own, not the retained heap of the other's calls)."""
    result = {"size": list(large_size(image.shape[-2], image.shape[-1], megapixels))}
    for codec in ("stlic", "elic"):
        command = [sys.executable, __file__, "--image", str(image_path), "--preset", preset,
                   "--large-megapixels", str(megapixels), "--large-child", codec]
        child = subprocess.run(command + (["--system-malloc"] if system_malloc else []),
                               capture_output=True, text=True, check=True)
        result[codec] = json.loads(child.stdout.strip().splitlines()[-1])
        print(codec, result[codec], flush=True)
    return result


def write_report(results: dict, image: Path, size: tuple[int, int], args: argparse.Namespace) -> Path:
    stlic, elic, large = results["stlic"], results["elic"], results["large"]
    breakdown = results["breakdown"]
    lines = [
        "# Codec benchmark: ST-LIC file codec vs CompressAI ELIC (untrained weights)",
        "",
        f"Image `{image.name}` ({size[1]}x{size[0]}), preset `{args.preset}`, median of {args.repeats} run(s) "
        "with ST-LIC and ELIC calls alternated, allocator "
        f"{'glibc defaults (`--system-malloc`)' if args.system_malloc else 'with freed memory retained (`stlic.allocator`, as `stlic compress` runs)'}, "
        f"{torch.get_num_threads()} torch threads, {platform.processor() or platform.machine()}, "
        f"load average at start {results['load_average']:.1f}.",
        "Both networks are untrained: timings are meaningful, bitrates are not. Peak RSS is the largest "
        f"resident size during the call; the process held {results['baseline_MB']:.0f} MB after its imports "
        f"(`import torch` alone: ~0.7 GB; `import compressai` adds ~0.3 GB, it imports torch_geometric "
        "and torchvision)." + ("" if args.system_malloc else " With freed memory retained, a call's peak includes "
        "the heap kept from the calls before it (both codecs share the process): the fresh-process table at "
        "the end gives each codec's own."),
        "",
        "| model | params (M) | encode (s) | decode (s) | encode peak RSS (MB) | decode peak RSS (MB) | bytes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| ST-LIC `{args.preset}` (file, incl. refiner) | {stlic['params_M']:.1f} | {stlic['encode_s']:.2f} | "
        f"{stlic['decode_s']:.2f} | {stlic['encode_peak_MB']:.0f} | {stlic['decode_peak_MB']:.0f} | {stlic['bytes']} |",
        f"| ELIC (Elic2022Official) | {elic['params_M']:.1f} | {elic['encode_s']:.2f} | {elic['decode_s']:.2f} | "
        f"{elic['encode_peak_MB']:.0f} | {elic['decode_peak_MB']:.0f} | {elic['bytes']} |",
        "",
        "| ST-LIC / ELIC | encode | decode |",
        "| --- | ---: | ---: |",
        f"| portable coding (float64 entropy parameters), refined image | {results['encode_ratio']:.2f}x | "
        f"{results['decode_ratio']:.2f}x |",
        f"| portable coding, decoder output `x_hat` (no refiner; {stlic['decode_x_hat_s']:.2f} s) | | "
        f"{stlic['decode_x_hat_s'] / elic['decode_s']:.2f}x |",
        f"| float32 entropy parameters (not portable, as ELIC), `x_hat` ({stlic['encode_float32_s']:.2f} s / "
        f"{stlic['decode_x_hat_float32_s']:.2f} s; {stlic['bytes_float32']} bytes) | "
        f"{stlic['encode_float32_s'] / elic['encode_s']:.2f}x | {stlic['decode_x_hat_float32_s'] / elic['decode_s']:.2f}x |",
        "",
        f"ST-LIC `reconstruct` (same networks and context model, no rANS, no container): "
        f"{stlic['reconstruct_s']:.2f} s.",
        "",
        "## Network size: multiply-accumulates of matrix products and convolutions (GMAC)",
        "",
        "| call | ST-LIC | ELIC | ST-LIC / ELIC |",
        "| --- | ---: | ---: | ---: |",
        *(f"| {label} | {results['gmacs'][key]:.0f} | {results['gmacs'][elic_key]:.0f} | "
          f"{results['gmacs'][key] / results['gmacs'][elic_key]:.2f}x |"
          for label, key, elic_key in (("encode", "stlic_encode", "elic_encode"),
                                       ("decode, refined image", "stlic_decode", "elic_decode"),
                                       ("decode, `x_hat`", "stlic_decode_x_hat", "elic_decode"))),
        "",
        "(`torch.utils.flop_counter`; the float64 entropy-parameter path counts like float32 but runs "
        "at half the matrix throughput, and element-wise work is not counted.)",
        "",
        "## Where ST-LIC's encode time goes (one run, same image)",
        "",
        "| stage | seconds |",
        "| --- | ---: |",
        *(f"| {name} | {seconds:.2f} |" for name, seconds in breakdown["stages_s"].items()),
        "",
        "The entropy-parameter path (h_s and the SCCTX model) runs in float64 so that every device and "
        "thread count selects the same CDFs (`stlic/models/parameter_path.py`); the rows above give its "
        "time in float32 and float64. Its cost in bits: y string "
        f"{breakdown['y_bytes']['float64']} bytes in float64 against {breakdown['y_bytes']['float32']} in float32.",
        "",
        f"## A {large['size'][1]}x{large['size'][0]} image ({large['size'][0] * large['size'][1] / 1e6:.1f} MP, "
        "the same photo upscaled), one run each, each codec in a fresh process",
        "",
        "| model | encode (s) | decode (s) | decode `x_hat` (s) | RSS after imports (MB) | encode peak RSS (MB) | "
        "decode peak RSS (MB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        *(f"| {name} | {r['encode_s']:.2f} | {r['decode_s']:.2f} | "
          f"{r['decode_x_hat_s'] if 'decode_x_hat_s' in r else r['decode_s']:.2f} | {r['baseline_MB']:.0f} | "
          f"{r['encode_peak_MB']:.0f} | {r['decode_peak_MB']:.0f} |"
          for name, r in (("ST-LIC", large["stlic"]), ("ELIC", large["elic"]))),
        "",
        f"Ratios ST-LIC / ELIC: encode {large['stlic']['encode_s'] / large['elic']['encode_s']:.2f}x, decode "
        f"{large['stlic']['decode_s'] / large['elic']['decode_s']:.2f}x, decode `x_hat` "
        f"{large['stlic']['decode_x_hat_s'] / large['elic']['decode_s']:.2f}x.",
        "",
        f"Reproduce: `python benchmarks/codec.py --preset {args.preset} --repeats {args.repeats} "
        f"--large-megapixels {args.large_megapixels}{' --system-malloc' if args.system_malloc else ''}`.",
    ]
    stem = "codec_system_malloc" if args.system_malloc else "codec"
    atomic_write_text(REPORT_DIR / f"{stem}.json", json.dumps(results, indent=2) + "\n")
    path = REPORT_DIR / f"{stem}.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=None, help="default: ../shared/data/kodak/kodim01.png")
    parser.add_argument("--preset", default="full")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--large-megapixels", type=float, default=2.0, help="size of the second, upscaled image")
    parser.add_argument("--system-malloc", action="store_true", help="keep glibc's allocator defaults")
    parser.add_argument("--large-child", choices=("stlic", "elic"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.system_malloc:
        retain_freed_memory()
    image_path = args.image or default_image()
    image = read_image(image_path)
    if args.large_child:
        print(json.dumps(large_child(args.large_child, large_image(image, args.large_megapixels), args.preset)))
        return
    load = os.getloadavg()[0]
    results = {"image": os.path.relpath(image_path, REPO_ROOT), "preset": args.preset, "load_average": load,
               "threads": torch.get_num_threads(), "baseline_MB": rss_mb()}
    results.update(run_interleaved(image, args.preset, args.repeats))
    results["breakdown"] = stage_breakdown(image, args.preset)
    results["gmacs"] = network_macs(image, args.preset)
    print(results["gmacs"], flush=True)
    print(results["breakdown"], flush=True)
    results["large"] = run_large(image, image_path, args.preset, args.large_megapixels, args.system_malloc)
    results["encode_ratio"] = results["stlic"]["encode_s"] / results["elic"]["encode_s"]
    results["decode_ratio"] = results["stlic"]["decode_s"] / results["elic"]["decode_s"]
    print(f"ST-LIC / ELIC: encode {results['encode_ratio']:.2f}x, decode {results['decode_ratio']:.2f}x")
    print(f"wrote {write_report(results, image_path, tuple(image.shape[-2:]), args)}")


if __name__ == "__main__":
    main()
