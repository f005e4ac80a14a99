"""Phase-2 experiment (issue 18): gather the Kodak evaluations into the results CSV and the plots.

    python benchmarks/phase2_report.py [--eval reports/phase2/eval] [--runs runs/phase2 runs/phase2b]
        [--run-dir table_long runs/phase2_long/table] [--out reports/phase2]

Reads every ``EVAL/<name>_bpp<target>/summary.json`` written by ``stlic eval --target-bpp`` (see
``reports/phase2/README.md`` for the commands) and, for the trained runs, ``RUNS/<name>/train_log.jsonl``
(the first of the ``--runs`` folders that has one, or the folder ``--run-dir NAME DIR`` names)
(GAN verdict on the second half of the run, :func:`stlic.training.gan_health.run_health`; steps;
wall time). Writes:

- ``results.csv``: one row per evaluation and output (decoder, refined): bpp, how many images
  missed the target by more than 2 %, PSNR, MS-SSIM, ST-LPIPS(vgg), FID/256, the GAN verdict and
  its numbers, the steps trained and the logged wall time;
- ``rate_perception.png``: bpp against ST-LPIPS and against PSNR, every evaluated point, with the
  RD start's QVRF level sweep (``pretrained/lalic_tiny_rd/kodak``) and JPEG's PSNR curve
  (``reports/anchors/jpeg_pillow_kodak.csv``) as the anchors' curves.

``--grid IMAGE`` also draws the visual comparison of the paper's Figs. 3-4: a crop of one image as
the original, JPEG, the RD start, the ST-LIC decoder and refined outputs and the coupled run, each
coded at the bpp closest to ``--grid-bpp`` (real bitstreams; JPEG at its closest quality, which
cannot go under its quality-1 rate: its panel says the bpp it got).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

COLUMNS = ("name", "output", "target_bpp", "bpp", "off_target_images", "num_images", "psnr", "ms_ssim", "lpips",
           "fid", "fid_patches", "gan_verdict", "gan_median_gap", "gan_median_accuracy", "gan_window",
           "steps", "wall_s", "checkpoint")
_EVAL_DIR = re.compile(r"^(?P<name>.+)_bpp(?P<target>[0-9.]+)$")
_OFF_TARGET = re.compile(r"^(\d+) image\(s\) could not reach")


def _run_facts(run_dir: Path) -> dict:
    """GAN verdict (second half), last step and last logged elapsed time of a training run."""
    from stlic.training.gan_health import run_health
    from stlic.training.logging import read_log

    if not (run_dir / "train_log.jsonl").is_file():
        return {}
    records = read_log(run_dir)
    facts = {"steps": records[-1]["step"], "wall_s": round(float(records[-1].get("elapsed_s", math.nan)), 1)}
    try:
        health, _ = run_health(records)
    except ValueError:  # no discriminator step (phase rd)
        return facts
    facts.update(gan_verdict=health.verdict, gan_median_gap=round(health.median_gap, 4),
                 gan_median_accuracy=round(health.median_accuracy, 4),
                 gan_window=f"{health.first_step}-{health.last_step}")
    return facts


def _run_dir(name: str, runs_roots, run_dirs: dict) -> Path:
    """The training folder of evaluation ``name``: ``run_dirs[name]``, else the first ``ROOT/name`` with a log."""
    if name in run_dirs:
        return Path(run_dirs[name])
    found = [Path(root) / name for root in runs_roots if (Path(root) / name / "train_log.jsonl").is_file()]
    return found[0] if found else Path(runs_roots[0]) / name


def collect(eval_root: Path, runs_roots: list[Path], run_dirs: dict) -> list[dict]:
    rows = []
    for summary_path in sorted(eval_root.glob("*/summary.json")):
        match = _EVAL_DIR.match(summary_path.parent.name)
        if match is None:
            continue
        summary = json.loads(summary_path.read_text())
        off = sum(int(m.group(1)) for note in summary["notes"] if (m := _OFF_TARGET.match(note)))
        facts = _run_facts(_run_dir(match["name"], runs_roots, run_dirs))
        for output in ("decoder", "refined"):
            scores = summary["outputs"][output]
            rows.append({
                "name": match["name"], "output": output, "target_bpp": float(match["target"]),
                "bpp": round(summary["bpp"], 4), "off_target_images": off, "num_images": summary["num_images"],
                "psnr": round(scores["psnr"], 3), "ms_ssim": _round(scores["ms_ssim"], 4),
                "lpips": round(scores["lpips"], 4), "fid": _round(scores["fid"], 2),
                "fid_patches": scores["fid_patches"], "checkpoint": summary["checkpoint"], **facts,
            })
    return rows


def _round(value, digits):
    return None if value is None else round(value, digits)


def write_csv(rows: list[dict], path: Path) -> None:
    from stlic.output_files import atomic_write_text

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def _anchor_curves() -> tuple[list, list]:
    """The RD start's level sweep (bpp, PSNR, ST-LPIPS) and JPEG's (bpp, PSNR) points."""
    rd = []
    for path in sorted(Path("pretrained/lalic_tiny_rd/kodak").glob("level_*/summary.json")):
        summary = json.loads(path.read_text())
        rd.append((summary["bpp"], summary["outputs"]["decoder"]["psnr"], summary["outputs"]["decoder"]["lpips"]))
    jpeg = []
    anchor = Path("reports/anchors/jpeg_pillow_kodak.csv")
    if anchor.is_file():
        lines = [line for line in anchor.read_text().splitlines() if line and not line.startswith("#")]
        jpeg = [(float(row["bpp"]), float(row["psnr"])) for row in csv.DictReader(lines)]
    return sorted(rd), sorted(jpeg)


def plot_rate_perception(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rd, jpeg = _anchor_curves()
    figure, (left, right, third) = plt.subplots(1, 3, figsize=(17, 5.2))
    top = 1.3 * max(row["bpp"] for row in rows)  # the anchors' curves over the evaluated range only
    rd = [p for p in rd if p[0] <= top] or rd
    jpeg = [p for p in jpeg if p[0] <= top]
    if rd:
        left.plot([p[0] for p in rd], [p[2] for p in rd], "k.--", lw=0.8, label="RD start, QVRF levels 0-5")
        right.plot([p[0] for p in rd], [p[1] for p in rd], "k.--", lw=0.8, label="RD start, QVRF levels 0-5")
    if jpeg:
        right.plot([p[0] for p in jpeg], [p[1] for p in jpeg], ":", color="grey", label="JPEG (Pillow 4:2:0)")
    names = sorted({row["name"] for row in rows})
    colours = {name: f"C{index}" for index, name in enumerate(names)}
    for row in rows:
        if row["output"] == "refined" and _same_as_decoder(rows, row):
            continue  # no refiner (RD start, coupled, JPEG): one point
        marker = "o" if row["output"] == "refined" else "s"
        label = f"{row['name']} {row['output']}"
        hollow = abs(row["bpp"] - row["target_bpp"]) > 0.03 * row["target_bpp"]  # mean bpp over 3 % off
        for axis, key in ((left, "lpips"), (right, "psnr"), (third, "fid")):
            if row[key] is not None:
                axis.plot(row["bpp"], row[key], marker, color=colours[row["name"]], ms=7,
                          mfc="none" if hollow else colours[row["name"]], label=label)
    for axis, label in ((left, "ST-LPIPS(vgg) (lower is better)"), (right, "PSNR (dB)"),
                        (third, "FID/256, 192 patches (lower is better)")):
        axis.set_xlabel("bpp (Kodak, 24 images, real files)")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    for axis in (left, right, third):
        handles, labels = axis.get_legend_handles_labels()
        unique = dict(zip(labels, handles))  # one entry per label
        axis.legend(unique.values(), unique.keys(), fontsize="x-small", ncol=2)
    figure.suptitle("Phase 2 on Kodak at target bpp 0.1 and 0.15: circles refined, squares decoder output; "
                    "hollow: mean bpp more than 3 % off its target")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _same_as_decoder(rows: list[dict], row: dict) -> bool:
    for other in rows:
        if other["name"] == row["name"] and other["target_bpp"] == row["target_bpp"] and other["output"] == "decoder":
            return all(other[k] == row[k] for k in ("psnr", "lpips", "ms_ssim", "fid"))
    return False


def plot_grid(image: Path, crop: tuple[int, int, int], target_bpp: float, panels: list[tuple[str, str, str]],
              path: Path) -> None:
    """``panels``: (title, checkpoint or "jpeg" or "original", output). Real files at the closest bpp."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from stlic.codec.codec import bits_per_pixel, decompress_image, find_level_for_bpp
    from stlic.codec.image_io import read_image
    from stlic.evaluation.coders import JpegCoder
    from stlic.training.checkpoint import load_inference_model

    x = read_image(image)
    top, left, size = crop
    cache: dict[str, tuple] = {}
    tiles = []
    for title, source, output in panels:
        if source == "original":
            y, bpp = x.unsqueeze(0), None
        elif source == "jpeg":
            coder = JpegCoder(target_bpp=target_bpp)
            coded = coder.encode(x)
            y, bpp = coder.decode(coded.data)[0], bits_per_pixel(coded.data, x)
        else:
            if source not in cache:
                model, _, _ = load_inference_model(source)
                search = find_level_for_bpp(model, x, target_bpp)
                cache[source] = (decompress_image(model, search.data), search.bpp)
            decoded, bpp = cache[source]
            y = decoded.x_refined if output == "refined" else decoded.x_hat
        tile = y[0, :, top:top + size, left:left + size].clamp(0, 1)
        tiles.append((title if bpp is None else f"{title}\n{bpp:.3f} bpp", tile))
    rows = 1 if len(tiles) <= 4 else 2
    columns = -(-len(tiles) // rows)
    figure, axes = plt.subplots(rows, columns, figsize=(2.8 * columns, 3.1 * rows + 0.3), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, (title, tile) in zip(axes.flat, tiles):
        axis.imshow(tile.permute(1, 2, 0).numpy())
        axis.set_title(title, fontsize=9)
    figure.suptitle(f"{image.name}, {size}x{size} crop at ({top}, {left}), near {target_bpp} bpp", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    plt.close(figure)


def balancer_health(run_dir: Path, targets_path: Path, max_change: float = 2.0) -> list[str]:
    """Markdown: the online Balancer's coefficients and shares over the run (``balancer/*`` log fields).

    Per coefficient: start, end, the largest one-update factor (against ``max_change``) and the standard
    deviation of its log over the second half; per targeted cell: the mean logged share over the second
    half against the target (a target is a mean share over a window, :mod:`gradbalance.balancer`).
    """
    import numpy as np
    import yaml

    from stlic.training.logging import read_log

    records = [r for r in read_log(run_dir) if "balancer/weight/rate" in r]
    if not records:
        return [f"no balancer fields in {run_dir}/train_log.jsonl"]
    half = records[len(records) // 2:]
    names = [k.split("/", 2)[2] for k in records[0] if k.startswith("balancer/weight/")]
    lines = [f"Online Balancer in `{run_dir}` ({len(records)} logged steps, second half from step {half[0]['step']}):",
             "", "| coefficient | start | end | largest factor per logged step | std of log, 2nd half |",
             "|---|---:|---:|---:|---:|"]
    for name in names:
        values = np.array([r[f"balancer/weight/{name}"] for r in records], dtype=float)
        logs = np.log(values)
        factor = float(np.exp(np.abs(np.diff(logs)).max())) if len(logs) > 1 else 1.0
        second = np.log([r[f"balancer/weight/{name}"] for r in half])
        lines.append(f"| {name} | {values[0]:.4g} | {values[-1]:.4g} | {factor:.3f} (max_change {max_change:g}) | "
                     f"{second.std():.3f} |")
    targets = yaml.safe_load(targets_path.read_text())
    lines += ["", "| cell | target % | mean share %, 2nd half | miss (pp) |", "|---|---:|---:|---:|"]
    misses = []
    for group, cells in targets.items():
        for loss, target in cells.items():
            key = f"balancer/share/{group}/{loss}"
            if target is None or not target or key not in records[0]:
                continue
            mean = float(np.mean([r[key] for r in half]))  # logged in percent
            misses.append(abs(mean - target))
            lines.append(f"| {group} {loss} | {target:.2f} | {mean:.2f} | {mean - target:+.2f} |")
    if misses:
        lines += ["", f"Mean miss {np.mean(misses):.2f} pp, largest {max(misses):.2f} pp."]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", type=Path, default=Path("reports/phase2/eval"))
    parser.add_argument("--runs", type=Path, nargs="+", default=[Path("runs/phase2"), Path("runs/phase2b")],
                        help="folders holding the training runs, searched in order for NAME/train_log.jsonl")
    parser.add_argument("--run-dir", nargs=2, action="append", default=[], metavar=("NAME", "DIR"),
                        help="the training folder of evaluation NAME, where it is not ROOT/NAME")
    parser.add_argument("--out", type=Path, default=Path("reports/phase2"))
    parser.add_argument("--grid", type=Path, action="append", default=[], help="image for the visual grid")
    parser.add_argument("--grid-crop", type=int, nargs=3, default=(160, 300, 192), metavar=("TOP", "LEFT", "SIZE"))
    parser.add_argument("--grid-bpp", type=float, default=0.1)
    parser.add_argument("--grid-tag", default="", help="suffix of the grid's file name: grid_<image><TAG>.png")
    parser.add_argument("--grid-panel", nargs=3, action="append", default=[], metavar=("TITLE", "SOURCE", "OUTPUT"),
                        help="a grid panel: title, checkpoint (or jpeg, original), decoder|refined")
    args = parser.parse_args()
    run_dirs = dict(args.run_dir)
    rows = collect(args.eval, args.runs, run_dirs)
    if not rows:
        raise SystemExit(f"no evaluation under {args.eval} (expected NAME_bppTARGET/summary.json)")
    write_csv(rows, args.out / "results.csv")
    plot_rate_perception(rows, args.out / "rate_perception.png")
    print(f"wrote {args.out / 'results.csv'} ({len(rows)} rows) and {args.out / 'rate_perception.png'}")
    balancer_run = _run_dir("balancer", args.runs, run_dirs)
    if (balancer_run / "train_log.jsonl").is_file():
        from report_file import publish

        publish(args.out / "balancer_health.md",
                balancer_health(balancer_run, Path("configs/targets/paper_table1_reachable.yaml")))
    for image in args.grid:
        out = args.out / f"grid_{image.stem}{args.grid_tag}.png"
        plot_grid(image, tuple(args.grid_crop), args.grid_bpp, [tuple(p) for p in args.grid_panel], out)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
