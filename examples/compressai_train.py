"""Train a CompressAI zoo model with gradbalance: CompressAI's ``examples/train.py``, probed or balanced.

CompressAI's ``RateDistortionLoss`` is ``λ·255²·mse + bpp``; here its two terms are separate losses,
``{"bpp": bpp, "mse": mse}`` with weights ``{"bpp": 1, "mse": λ·255²}``, so the probe can tell each
loss's share of the gradient reaching each module (ST-LIC, Table I). The aux loss trains only the
entropy bottleneck's ``quantiles`` (its own optimizer, a plain backward): they are left out of the
groups (``ignore=``). Everything else the user knows from CompressAI stays: the zoo model, two Adam
optimizers, ``clip_grad_norm_``, ReduceLROnPlateau on the validation loss, the best checkpoint.

What changes with gradbalance:

* ``--balance TARGETS``: a :class:`gradbalance.Balancer` moves λ·255² (bpp is held), so the logged
  loss, the validation loss, the scheduler and the best checkpoint use the *balanced* weights;
* the probe's or the Balancer's state is in the checkpoint (``--resume`` continues exactly);
* the table (``RUN/table.md``) states how many probed steps it averages and which losses have no path
  to which module (bpp never reaches ``g_s``; mse never reaches the hyperprior).

Examples::

    python examples/compressai_train.py -m bmshj2018-hyperprior -q 3 -d /data/train --lambda 0.0130 \\
        --steps 100000 --probe-every 10 --save runs/hyperprior
    python examples/compressai_train.py -m mbt2018-mean --balance '{"g_a": {"bpp": 30, "mse": 70}}' --save runs/b
"""
from __future__ import annotations

import argparse
import json
import math
import random
import re
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from gradbalance import Balancer, GradientProbe
from gradbalance.io.atomic import atomic_write, atomic_write_text

#: groups of the CompressAI zoo architectures (regexes on parameter names; absent modules are dropped).
#: Other trainable parameters (the VBR models' Gain, QuantABCD, scale_to_context) form group "other".
ZOO_GROUPS = {
    "g_a": r"^g_a\.",
    "g_s": r"^g_s\.",
    "hyper": r"^h_[as]\.",
    "entropy": r"^entropy_bottleneck\.(?!quantiles$)",
    "context": r"^(context_prediction|entropy_parameters)\.",
}


def zoo_groups(net: nn.Module) -> tuple[dict, list]:
    """The groups present in ``net`` and the aux-trained ``quantiles`` (for ``ignore=``)."""
    names = [re.sub(r"(^|\.)_orig_mod\.", r"\1", n) for n, _ in net.named_parameters()]
    groups = {g: r for g, r in ZOO_GROUPS.items() if any(re.search(r, n) for n in names)}
    return groups, [p for n, p in net.named_parameters() if n.endswith("quantiles")]


def rd_losses(out: dict, x: torch.Tensor) -> dict:
    """CompressAI's RateDistortionLoss, unweighted: bits per pixel and the MSE of x_hat."""
    num_pixels = x.size(0) * x.size(2) * x.size(3)
    bpp = sum(torch.log(l).sum() for l in out["likelihoods"].values()) / (-math.log(2) * num_pixels)
    return {"bpp": bpp, "mse": nn.functional.mse_loss(out["x_hat"], x)}


class RandomCrops(Dataset):
    """Random ``patch`` crops of images in folders (or scikit-image's bundled photographs)."""

    def __init__(self, folders: list, patch: int, length: int) -> None:
        from PIL import Image
        from torchvision.transforms.functional import to_tensor

        if folders:
            files = sorted(f for d in folders for f in Path(d).rglob("*")
                           if f.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp", ".webp"})
            if not files:
                raise SystemExit(f"error: no images in {folders}")
            images = [to_tensor(Image.open(f).convert("RGB")) for f in files]
        else:
            from skimage import data

            images = [to_tensor(getattr(data, n)()) for n in ("astronaut", "chelsea", "coffee", "rocket")]
        self.images = [im for im in images if min(im.shape[1:]) >= patch]
        if not self.images:
            raise SystemExit(f"error: no image is at least {patch} px on each side")
        self.patch, self.length = patch, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        image = self.images[index % len(self.images)]
        top = random.randint(0, image.shape[1] - self.patch)
        left = random.randint(0, image.shape[2] - self.patch)
        return image[:, top:top + self.patch, left:left + self.patch]


def configure_optimizers(net: nn.Module, args) -> tuple:
    """CompressAI's split: the main Adam for everything but ``quantiles``, the aux Adam for them."""
    main = [p for n, p in net.named_parameters() if not n.endswith(".quantiles") and p.requires_grad]
    aux = [p for n, p in net.named_parameters() if n.endswith(".quantiles") and p.requires_grad]
    return torch.optim.Adam(main, lr=args.learning_rate), torch.optim.Adam(aux, lr=args.aux_learning_rate)


def weighted(losses: dict, weights: dict) -> float:
    return float(sum(weights[k] * v.detach() for k, v in losses.items()))


def parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-m", "--model", default="bmshj2018-hyperprior", help="CompressAI zoo architecture")
    parser.add_argument("-q", "--quality", type=int, default=1)
    parser.add_argument("-d", "--dataset", nargs="*", default=[], help="image folders (default: scikit-image photos)")
    parser.add_argument("--lambda", dest="lmbda", type=float, default=1e-2, help="rate-distortion λ (weight λ·255²)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--patch-size", type=int, default=256)
    parser.add_argument("-lr", "--learning-rate", type=float, default=1e-4)
    parser.add_argument("--aux-learning-rate", type=float, default=1e-3)
    parser.add_argument("--clip_max_norm", type=float, default=1.0)
    parser.add_argument("--probe-every", type=int, default=10, help="probe every K optimizer steps (from step 0)")
    parser.add_argument("--balance", help="Balancer targets, JSON: {group: {loss: percent}} (bpp's weight is held)")
    parser.add_argument("--validate-every", type=int, default=100)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--save", type=Path, help="run folder: checkpoint.pt, checkpoint_best.pt, table.md")
    parser.add_argument("--resume", action="store_true", help="continue SAVE/checkpoint.pt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.resume and args.save is None:
        parser.error("--resume needs --save")
    return args


def main(argv=None) -> int:
    from compressai.zoo import image_models

    args = parse_args(argv)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    net = image_models[args.model](quality=args.quality, pretrained=False).to(args.device)
    groups, quantiles = zoo_groups(net)
    model = torch.compile(net) if args.compile else net
    optimizer, aux_optimizer = configure_optimizers(net, args)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, "min")
    weights = {"bpp": 1.0, "mse": args.lmbda * 255 ** 2}
    if args.balance:
        tracker = Balancer(model, groups, json.loads(args.balance), weights=weights, every=args.probe_every,
                           fixed=["bpp"], ignore=quantiles, loss_order=["bpp", "mse"])
    else:
        tracker = GradientProbe(model, groups, optimizer=optimizer, every=args.probe_every, ignore=quantiles,
                                loss_order=["bpp", "mse"])
    train = DataLoader(RandomCrops(args.dataset, args.patch_size, args.steps * args.batch_size),
                       batch_size=args.batch_size, shuffle=False)
    valid = torch.stack([RandomCrops(args.dataset, args.patch_size, 4)[i] for i in range(4)]).to(args.device)
    step, best = 0, math.inf
    if args.resume:
        state = torch.load(args.save / "checkpoint.pt", map_location=args.device, weights_only=True)
        net.load_state_dict(state["state_dict"])
        for obj, key in ((optimizer, "optimizer"), (aux_optimizer, "aux_optimizer"), (scheduler, "lr_scheduler"),
                         (tracker, "balancer" if args.balance else "probe")):
            obj.load_state_dict(state[key])
        step, best = int(state["step"]), float(state["best_loss"])
    current = lambda: tracker.weights if args.balance else weights  # noqa: E731  the weights now in force
    start = time.perf_counter()
    for x in train:
        if step >= args.steps:
            break
        x = x.to(args.device)
        model.train()
        optimizer.zero_grad()
        aux_optimizer.zero_grad()
        losses = rd_losses(model(x), x)
        if args.balance:
            tracker.backward(losses)  # == (c_bpp * bpp + c_mse * mse).backward(), c_mse balanced
        else:
            tracker.backward(losses, weights)  # == (bpp + λ·255² mse).backward()
        if args.clip_max_norm > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), args.clip_max_norm)
        optimizer.step()
        aux_loss = net.aux_loss()
        aux_loss.backward()
        aux_optimizer.step()
        step += 1
        if step % args.log_every == 0:
            w = current()
            print(f"step {step}: loss {weighted(losses, w):.4f} | bpp {float(losses['bpp'].detach()):.4f} | "
                  f"mse {float(losses['mse'].detach()):.6f} | aux {float(aux_loss.detach()):.2f} | mse weight {w['mse']:.1f} | "
                  f"{time.perf_counter() - start:.1f} s", flush=True)
        if step % args.validate_every == 0 or step == args.steps:
            model.eval()
            with torch.no_grad():
                loss = weighted(rd_losses(model(valid), valid), current())
            scheduler.step(loss)
            if args.save is not None:
                state = {"step": step, "state_dict": net.state_dict(), "optimizer": optimizer.state_dict(),
                         "aux_optimizer": aux_optimizer.state_dict(), "lr_scheduler": scheduler.state_dict(),
                         "best_loss": min(best, loss), "weights": dict(current()),
                         ("balancer" if args.balance else "probe"): tracker.state_dict()}
                atomic_write(args.save / "checkpoint.pt", lambda handle: torch.save(state, handle))
                if loss < best:
                    atomic_write(args.save / "checkpoint_best.pt", lambda handle: torch.save(state, handle))
            best = min(best, loss)
    report = (f"balancer weights {tracker.weights}" if args.balance
              else f"gradient share (%) of each loss in each group:\n{tracker.table().to_markdown()}")
    print(report)
    if args.save is not None:
        atomic_write_text(args.save / ("weights.txt" if args.balance else "table.md"), report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
