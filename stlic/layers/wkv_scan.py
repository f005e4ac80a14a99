"""Decayed prefix sums in log-scaled form: the scan under ``stlic.layers.wkv.bi_wkv``.

    S_t = sum_{i<t} e^{-(t-i-1) w + a_i} x_i          (exclusive; per channel w, any sign)

Every sum is held as (m, s) with true value e^m * s (the "pp/aa/bb" trick of RWKV), so it is
exact for any sign and size of ``w`` and any range of ``a``. Blocks of L = ``chunk`` tokens
are summed directly; their summaries form the same problem with decay L*w over T/L tokens,
solved recursively. Inside a block, with b_i = a_i + i w the sum factorises,
S_t = e^{max b - (t-1) w} * sum_{i<t} e^{b_i - max b} x_i  (one cumsum), when the spread of b
keeps every term a normal float; a block whose spread is too large uses the exact dense
O(L^2) form. This was ``bi_wkv``'s only path; it is now its fallback (``method="scan"``).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["LogScaled", "log_add", "decayed_prefix_sum", "both_directions", "DEFAULT_CHUNK"]

DEFAULT_CHUNK = 32

LogScaled = tuple[Tensor, Tensor]
"""A sum held as (m, s): true value e^m * s; m (B, C, ...) is -inf for an empty sum and
s (B, C, F, ...) holds F value features (features before tokens: contiguous scans)."""

# Largest exponent spread for which the factorised (cumsum) path keeps every term a normal
# float with headroom: e^-40 ~ 4e-18 (float32), e^-300 ~ 5e-131 (float64).
_FACTORISED_MAX_SPREAD = {torch.float32: 40.0, torch.float64: 300.0}


def log_add(pieces: Sequence[LogScaled]) -> LogScaled:
    """Sum of log-scaled pieces, renormalised by their largest log-scale (-inf if all empty).

    The first piece must have the full shape; later ones may broadcast to it.
    """
    top = pieces[0][0]
    for m, _ in pieces[1:]:
        top = torch.maximum(top, m)
    safe_top = top.clamp(min=torch.finfo(top.dtype).min)  # -inf - safe_top stays -inf
    total = pieces[0][1] * torch.exp(pieces[0][0] - safe_top).unsqueeze(2)
    for m, s in pieces[1:]:
        total.addcmul_(s, torch.exp(m - safe_top).unsqueeze(2))
    return top, total


def _factorised(w: Tensor, a: Tensor, x: Tensor) -> tuple[LogScaled, LogScaled] | None:
    """Prefix sums along the last axis by one cumsum, or None if the spread of b is too large.

    a: (..., L); x: (B, C, F, ..., L) with a's batch dims after F. Returns ((m, s) per token,
    (m, s) of the whole block seen from the token after its end).
    """
    steps = a.shape[-1]
    pos = torch.arange(steps, device=a.device, dtype=a.dtype)
    decay = w.view(-1, *([1] * (a.dim() - 2)))  # (C, 1, ..., 1)
    b = a + pos * decay
    b_max = b.amax(dim=-1)
    if (b_max - b.amin(dim=-1)).max() > _FACTORISED_MAX_SPREAD[a.dtype]:
        return None
    terms = b.sub_(b_max[..., None]).exp_().unsqueeze(2) * x
    inclusive = terms.cumsum(dim=-1)
    inner_s = F.pad(inclusive[..., :-1], (1, 0))
    inner_m = b_max[..., None] - (pos - 1.0) * decay
    inner_m[..., 0] = float("-inf")  # nothing precedes the first token
    return (inner_m, inner_s), (b_max - (steps - 1) * decay[..., 0], inclusive[..., -1])


def _dense_block_sums(w: Tensor, a: Tensor, x: Tensor) -> LogScaled:
    """Prefix sums inside blocks by the (L, L) exponent matrix, each row stabilised by its max.

    Exact for any spread of exponents; O(L^2) per block. a: (B, C, n, L); x: (B, C, F, n, L).
    """
    steps = a.shape[-1]
    pos = torch.arange(steps, device=a.device, dtype=a.dtype)
    gap = pos[:, None] - pos[None, :] - 1.0  # (t, i): t - i - 1, used where >= 0
    decay = (gap * w[:, None, None]).masked_fill(gap < 0, float("inf"))  # (C, t, i)
    exponent = a[..., None, :] - decay[None, :, None]  # (B, C, n, t, i); -inf where i >= t
    row_max = exponent.amax(dim=-1)  # -inf on row t = 0
    safe_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    weights = exponent.sub_(safe_max[..., None]).exp_()
    return row_max, torch.einsum("bcnti,bcfni->bcfnt", weights, x)


def _block_sums(w: Tensor, a: Tensor, x: Tensor) -> tuple[LogScaled, LogScaled]:
    """Inside-block prefix sums and block totals seen from the next block's start.

    Factorised (``_factorised``) when the spread of b in every block allows it, otherwise the
    exact dense O(L^2) form. a: (B, C, n, L); x: (B, C, F, n, L).
    """
    fast = _factorised(w, a, x)
    if fast is not None:
        return fast
    steps = a.shape[-1]
    pos = torch.arange(steps, device=a.device, dtype=a.dtype)
    to_end = a - (steps - 1 - pos) * w[:, None, None]  # = a_i - (L-1-i) w
    summary_m = to_end.amax(dim=-1)
    summary_s = (to_end.sub_(summary_m[..., None]).exp_().unsqueeze(2) * x).sum(dim=-1)
    return _dense_block_sums(w, a, x), (summary_m, summary_s)


@torch.no_grad()
def decayed_prefix_sum(w: Tensor, a: Tensor, x: Tensor, chunk: int = DEFAULT_CHUNK) -> LogScaled:
    """Exclusive decayed prefix sum  S_t = sum_{i<t} e^{-(t-i-1) w + a_i} x_i  in log-scaled form.

    Blocked scan: blocks of L = ``chunk`` tokens are summed directly (``_block_sums``); each
    block is summarised towards its end, and the summaries form the same problem with decay
    L*w over T/L tokens, solved recursively. Every partial sum carries its own max exponent.
    Not differentiable (``bi_wkv`` has an analytic backward).

    Args:
        w: (C,) decay per step. a: (B, C, T) log-weights. x: (B, C, F, T) values.
    Returns:
        (m, s) with S_t = e^{m_t} s_t; m (B, C, T), s (B, C, F, T).
    """
    if chunk < 2:
        raise ValueError(f"chunk must be >= 2, got {chunk}")
    if a.dtype not in _FACTORISED_MAX_SPREAD or x.dtype != a.dtype or w.dtype != a.dtype:
        raise ValueError(f"decayed_prefix_sum needs w, a, x all float32 or all float64; got "
                         f"{w.dtype}, {a.dtype}, {x.dtype}")
    batch, channels, steps = a.shape
    features = x.shape[2]
    if steps <= chunk:
        (m, s), _ = _block_sums(w, a[:, :, None], x[:, :, :, None])
        return m[:, :, 0], s[:, :, :, 0]
    n_blocks = math.ceil(steps / chunk)
    pad = n_blocks * chunk - steps
    if pad:  # padded tokens (x = 0, a repeated: no added spread) only reach padded rows
        a = F.pad(a, (0, pad), mode="replicate")
        x = F.pad(x, (0, pad))
    a = a.view(batch, channels, n_blocks, chunk)
    x = x.view(batch, channels, features, n_blocks, chunk)
    inner, (summary_m, summary_s) = _block_sums(w, a, x)
    carry_m, carry_s = decayed_prefix_sum(chunk * w, summary_m, summary_s, chunk)
    pos = torch.arange(chunk, device=a.device, dtype=a.dtype)
    carry_m = carry_m[..., None] - pos * w[:, None, None]  # decay from block start to token
    m, s = log_add([inner, (carry_m, carry_s[..., None])])
    m, s = m.reshape(batch, channels, -1), s.reshape(batch, channels, features, -1)
    return m[..., :steps], s[..., :steps]


def both_directions(w: Tensor, a: Tensor, x: Tensor, chunk: int) -> tuple[LogScaled, LogScaled]:
    """Left sums (i < t) and right sums (i > t), computed in one batched scan."""
    batch = a.shape[0]
    m, s = decayed_prefix_sum(w, torch.cat([a, a.flip(-1)]), torch.cat([x, x.flip(-1)]), chunk)
    return (m[:batch], s[:batch]), (m[batch:].flip(-1), s[batch:].flip(-1))
