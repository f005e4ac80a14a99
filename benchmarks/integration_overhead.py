"""Cost of probing every 10 steps in other people's training loops: CompressAI's script and Lightning.

1. ``examples/compressai_train.py``'s step (zoo model, bpp + mse, clip_grad_norm_, main and aux Adam):
   the probed run (``GradientProbe(..., optimizer=, every=10)``, optimizer-aware norms included)
   against CompressAI's own ``(bpp + λ·255² mse).backward()``, two copies of one model, steps interleaved.
2. Lightning: the same model in a LightningModule, ``GradBalanceCallback(every=10)`` (training_step
   returns the unweighted losses) against a module returning the weighted sum; per-batch time
   (``on_train_batch_start`` to ``on_train_batch_end``), fits alternated.

Target: probed / unprobed <= 1.1x in both. Writes reports/benchmarks/integration_overhead.{md,json}.
Run: OMP_NUM_THREADS=1 python benchmarks/integration_overhead.py [--steps 40] [--rounds 2] [--device cpu]
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import statistics
import time
from pathlib import Path

import torch

from gradbalance import GradientProbe

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "reports" / "benchmarks" / "integration_overhead"


def example_module():
    spec = importlib.util.spec_from_file_location("compressai_train", ROOT / "examples" / "compressai_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def compressai_loop(ex, args) -> dict:
    """Per-step time of the script's loop, probed every 10 vs CompressAI's plain backward."""
    from compressai.zoo import image_models

    torch.manual_seed(0)
    base = image_models[args.model](quality=args.quality, pretrained=False).to(args.device)
    nets = {"plain": base, "probed": copy.deepcopy(base)}
    opts = {name: ex.configure_optimizers(net, argparse.Namespace(learning_rate=1e-4, aux_learning_rate=1e-3))
            for name, net in nets.items()}
    groups, quantiles = ex.zoo_groups(nets["probed"])
    probe = GradientProbe(nets["probed"], groups, optimizer=opts["probed"][0], every=10, ignore=quantiles)
    weights = {"bpp": 1.0, "mse": 1e-2 * 255 ** 2}
    x = torch.rand(args.batch_size, 3, args.patch_size, args.patch_size, device=args.device)
    elapsed = {name: [] for name in nets}
    for step in range(args.steps + 1):  # step 0 (probed) warms up and is not timed
        for name, net in nets.items():
            optimizer, aux_optimizer = opts[name]
            sync(args.device)
            start = time.perf_counter()
            optimizer.zero_grad()
            aux_optimizer.zero_grad()
            losses = ex.rd_losses(net(x), x)
            if name == "probed":
                probe.backward(losses, weights)
            else:
                sum(weights[k] * v for k, v in losses.items()).backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optimizer.step()
            net.aux_loss().backward()
            aux_optimizer.step()
            sync(args.device)
            if step:
                elapsed[name].append(time.perf_counter() - start)
    probed_steps = len(probe.history) - 1
    return dict(steps=args.steps, probed_steps=probed_steps, plain_ms=1e3 * statistics.mean(elapsed["plain"]),
                probed_ms=1e3 * statistics.mean(elapsed["probed"]),
                ratio=sum(elapsed["probed"]) / sum(elapsed["plain"]))


def lightning_fits(ex, args) -> dict:
    import lightning.pytorch as L
    from compressai.zoo import image_models

    from gradbalance.integrations.lightning import GradBalanceCallback

    weights = {"bpp": 1.0, "mse": 1e-2 * 255 ** 2}

    class Codec(L.LightningModule):
        def __init__(self, weighted: bool) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = image_models[args.model](quality=args.quality, pretrained=False)
            self.weighted = weighted

        def training_step(self, x, batch_idx):
            losses = ex.rd_losses(self.net(x), x)
            return sum(weights[k] * v for k, v in losses.items()) if self.weighted else losses

        def configure_optimizers(self):
            return torch.optim.Adam([p for n, p in self.named_parameters() if not n.endswith("quantiles")], lr=1e-4)

    class BatchTimer(L.Callback):
        def __init__(self) -> None:
            self.times = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            sync(args.device)
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            sync(args.device)
            self.times.append(time.perf_counter() - self.start)

    x = torch.rand(args.batch_size * (args.steps + 1), 3, args.patch_size, args.patch_size)
    loader = torch.utils.data.DataLoader(x, batch_size=args.batch_size)
    times = {"plain": [], "probed": []}
    probed_steps = 0
    for _ in range(args.rounds):
        for name in ("plain", "probed"):
            timer = BatchTimer()
            callbacks = [timer]
            if name == "probed":
                callbacks.append(GradBalanceCallback({"g_a": r"^net\.g_a\.", "g_s": r"^net\.g_s\.",
                                                      "hyper": r"^net\.h_[as]\."}, weights=weights, every=10,
                                                     ignore=lambda m: [m.net.entropy_bottleneck.quantiles]))
            trainer = L.Trainer(max_steps=args.steps + 1, accelerator="gpu" if args.device.startswith("cuda") else "cpu",
                                devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                enable_model_summary=False, callbacks=callbacks)
            trainer.fit(Codec(weighted=name == "plain"), loader)
            times[name] += timer.times[1:]  # the first batch (probed) warms up
            if name == "probed":
                probed_steps += len(callbacks[1].probe.history) - 1
    return dict(steps=args.steps, rounds=args.rounds, probed_steps=probed_steps,
                plain_ms=1e3 * statistics.mean(times["plain"]), probed_ms=1e3 * statistics.mean(times["probed"]),
                ratio=sum(times["probed"]) / sum(times["plain"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="bmshj2018-hyperprior")
    parser.add_argument("--quality", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--patch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per run (every 10th probed)")
    parser.add_argument("--rounds", type=int, default=2, help="Lightning: alternated plain/probed fits")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=REPORT)
    args = parser.parse_args()
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    ex = example_module()
    rows = {"compressai_train.py loop": compressai_loop(ex, args)}
    print(f"compressai loop: {rows['compressai_train.py loop']['ratio']:.3f}x", flush=True)
    rows["Lightning GradBalanceCallback"] = lightning_fits(ex, args)
    print(f"lightning: {rows['Lightning GradBalanceCallback']['ratio']:.3f}x", flush=True)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    meta = dict(torch=torch.__version__, device=device, model=f"{args.model} q{args.quality}",
                batch=f"{args.batch_size}x{args.patch_size}px", load=load,
                date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=2))
    lines = [f"# Probing every 10 steps in CompressAI's loop and in Lightning ({device})", "",
             f"{meta['date']}, torch {meta['torch']}, {meta['model']}, batch {meta['batch']}, load average at start "
             f"{meta['load']}. Target: probed / unprobed <= 1.1x. Command: `OMP_NUM_THREADS=1 python "
             f"benchmarks/integration_overhead.py --device {args.device}`.", "",
             "| loop | timed steps | probed among them | unprobed ms/step | probed-every-10 ms/step | ratio |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {name} | {r['steps'] * r.get('rounds', 1)} | {r['probed_steps']} | {r['plain_ms']:.1f} | "
              f"{r['probed_ms']:.1f} | **{r['ratio']:.3f}x** |" for name, r in rows.items()]
    lines += ["", "Unprobed: CompressAI's `(bpp + λ·255² mse).backward()` / a LightningModule returning the weighted "
              "sum. The CompressAI probe also computes the optimizer-aware (Adam) norms on its probed steps; the "
              "Lightning callback measures raw shares only and logs nothing here (`logger=False`).", ""]
    out.with_suffix(".md").write_text("\n".join(lines))
    print(f"written {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
