"""Test models and the brute-force reference for the gradbalance tests.

Each model fixture returns a :class:`Case`: a float64 model, its groups and a closure that recomputes
the unweighted losses deterministically (noise is reseeded), so references can redo the forward.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from gradbalance.targets.examples import TinyAutoencoder, example_losses


@dataclass
class Case:
    model: nn.Module
    groups: dict
    losses: Callable[[], dict]  # recomputes {name: scalar tensor} with fixed noise
    weights: dict


class BranchyMLP(nn.Module):
    """Trunk + two heads; the 'aux' loss reaches the trunk only, a frozen layer in the trunk."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16))
        self.head = nn.Linear(16, 3)
        self.unused = nn.Linear(3, 3)  # reached by no loss


def make_mlp_case() -> Case:
    torch.manual_seed(0)
    model = BranchyMLP().double()
    x, y = torch.randn(5, 6, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)

    def losses() -> dict:
        h = model.trunk(x)
        out = model.head(h)
        return {"fit": (out - y).square().mean(), "sparse": out.abs().mean(), "aux": h.square().mean()}

    groups = {"trunk": model.trunk, "head": model.head, "unused": model.unused}
    return Case(model, groups, losses, {"fit": 1.0, "sparse": 0.3, "aux": -0.05})


def make_autoencoder_case() -> Case:
    torch.manual_seed(1)
    model = TinyAutoencoder(channels=4, latent=3).double()  # has BatchNorm in the encoder
    x = torch.rand(2, 3, 16, 16, dtype=torch.float64)

    def losses() -> dict:
        torch.manual_seed(123)
        return example_losses(model, x)

    return Case(model, {"encoder": model.encoder, "decoder": model.decoder}, losses,
                {"rate": 0.01, "l2": 1.0, "l1": 0.1})


def make_hyperprior_case() -> Case:
    from compressai.models import ScaleHyperprior

    torch.manual_seed(2)
    model = ScaleHyperprior(N=8, M=8).double()
    x = torch.rand(1, 3, 64, 64, dtype=torch.float64)

    def losses() -> dict:
        torch.manual_seed(7)
        out = model(x)
        bits = sum(torch.log(lk).sum() for lk in out["likelihoods"].values()) / -math.log(2)
        return {"rate": bits / (64 * 64), "mse": (out["x_hat"] - x).square().mean()}

    groups = {"g_a": model.g_a, "g_s": model.g_s, "hyper": r"^h_[as]\.", "entropy": r"^entropy_bottleneck\."}
    return Case(model, groups, losses, {"rate": 1.0, "mse": 130.0})


CASES = {"mlp": make_mlp_case, "autoencoder_bn": make_autoencoder_case, "scale_hyperprior": make_hyperprior_case}


def group_parameters(model: nn.Module, spec) -> list[nn.Parameter]:
    """Trainable parameters of a group spec, resolved independently of gradbalance.probe.groups."""
    if isinstance(spec, str):
        import re
        return [p for n, p in model.named_parameters() if re.search(spec, n) and p.requires_grad]
    return [p for p in spec.parameters() if p.requires_grad]


def brute_force_norms(case: Case) -> np.ndarray:
    """raw_norm[i, j]: a fresh forward and one autograd.grad per (loss, group), float64; NaN = unreached."""
    names = list(case.losses())
    out = np.full((len(names), len(case.groups)), np.nan)
    for i, name in enumerate(names):
        for j, spec in enumerate(case.groups.values()):
            params = group_parameters(case.model, spec)
            loss = case.losses()[name]
            grads = torch.autograd.grad(loss, params, allow_unused=True) if loss.requires_grad else [None]
            present = [g for g in grads if g is not None]
            if present:
                out[i, j] = math.sqrt(sum(float((g.double() ** 2).sum()) for g in present))
    return out
