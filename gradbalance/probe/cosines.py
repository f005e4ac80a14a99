"""Pairwise cosines between the losses' gradients in each parameter group (the conflict view).

    cos_j(a, b) = sign(w_a w_b) <g_aj, g_bj> / (||g_aj|| ||g_bj||)

over the parameters of group j (a parameter loss a does not reach counts as a zero gradient).
Computed one parameter at a time (``torch.dot`` per pair and parameter, summed in float64), so no
flattened copy of a group's gradients is made.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import numpy as np
import torch
from torch import Tensor


def group_cosines(grads: Sequence[Sequence[Optional[Tensor]]], positions: Sequence[Sequence[int]],
                  weights: Sequence[float]) -> np.ndarray:
    """``cosine[j, a, b]`` (NaN when a or b is absent from group j, has weight 0 or a zero gradient)."""
    n = len(grads)
    out = np.full((len(positions), n, n), np.nan)
    for j, members in enumerate(positions):
        pairs = [(a, b) for a in range(n) for b in range(a, n)
                 if weights[a] * weights[b] != 0 and any(grads[a][k] is not None for k in members)
                 and any(grads[b][k] is not None for k in members)]
        if not pairs:
            continue
        device = next(grads[a][k].device for a, _ in pairs for k in members if grads[a][k] is not None)
        dots = []
        for a, b in pairs:
            terms = [torch.dot(grads[a][k].reshape(-1), grads[b][k].reshape(-1)).to(torch.float64)
                     for k in members if grads[a][k] is not None and grads[b][k] is not None]
            dots.append(torch.stack(terms).sum() if terms else torch.zeros((), dtype=torch.float64, device=device))
        values = dict(zip(pairs, torch.stack([d.cpu() for d in dots]).numpy().tolist()))
        for a, b in pairs:
            denominator = np.sqrt(values[a, a] * values[b, b])
            if denominator > 0:
                out[j, a, b] = out[j, b, a] = np.sign(weights[a] * weights[b]) * values[a, b] / denominator
    return out
