"""Bidirectional WKV (Bi-WKV) attention of Vision-RWKV, as used by LALIC.

For one channel with per-step decay ``w`` and self bonus ``u`` (Duan et al., "Vision-RWKV",
ICLR 2025, Eq. 4; Feng et al., "Linear Attention Modeling for Learned Image Compression",
CVPR 2025)::

    y_t = ( sum_{i != t} e^{-(|t-i|-1) w + k_i} v_i + e^{u + k_t} v_t )
        / ( sum_{i != t} e^{-(|t-i|-1) w + k_i}     + e^{u + k_t}     )

The modules pass ``w = decay / T`` and ``u = boost / T``. ``w`` enters the exponent as given
(no ``exp``): the Vision-RWKV / LALIC Bi-WKV CUDA kernel multiplies the distance by the raw
``w`` it receives, unlike causal RWKV-4 where the module passes ``-exp(decay)``. A negative
``w`` therefore makes far tokens weigh *more*; both signs are handled without overflow.

``bi_wkv`` runs in O(T * L) time and memory (L = chunk length): every sum is kept as a
log-scale ``m`` and a normalised sum ``s`` (true value ``e^m * s``, the "pp/aa/bb" trick of
RWKV) so that no ``exp`` ever sees a positive argument. ``bi_wkv_reference`` is the direct
O(T^2) formula in float64 for tests.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["bi_wkv", "bi_wkv_reference", "decayed_prefix_sum"]

DEFAULT_CHUNK = 16

LogScaled = tuple[Tensor, Tensor]
"""A sum held as (m, s): true value e^m * s; m (..., C) has -inf for an empty sum, s (..., C, F)."""


def _log_add(pieces: Sequence[LogScaled]) -> LogScaled:
    """Sum of log-scaled pieces, renormalised by the largest (detached) log-scale.

    The stabiliser cancels exactly, so detaching it keeps autograd exact.
    """
    top = torch.stack(torch.broadcast_tensors(*(m.detach() for m, _ in pieces))).amax(0)
    safe_top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # all empty: -inf
    total = sum(torch.exp(m - safe_top).unsqueeze(-1) * s for m, s in pieces)
    return top, total


def _dense_prefix_sum(w: Tensor, a: Tensor, x: Tensor) -> LogScaled:
    """sum_{i<t} e^{-(t-i-1) w + a_i} x_i by the (L, L) exponent matrix, row-max stabilised.

    a: (B, L, C), x: (B, L, C, F), w: (C,). O(L^2) per row block.
    """
    steps = a.shape[1]
    pos = torch.arange(steps, device=a.device)
    gap = (pos[:, None] - pos[None, :] - 1).to(a.dtype)  # (t, i): t - i - 1, valid where >= 0
    exponent = a[:, None, :, :] - gap[None, :, :, None] * w  # (B, t, i, C)
    exponent = exponent.masked_fill((gap < 0)[None, :, :, None], float("-inf"))
    row_max = exponent.detach().amax(dim=2)  # (B, t, C); -inf on row t = 0
    safe_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    weights = torch.exp(exponent - safe_max[:, :, None, :])
    return row_max, torch.einsum("btic,bicf->btcf", weights, x)


def decayed_prefix_sum(w: Tensor, a: Tensor, x: Tensor, chunk: int | None = None) -> LogScaled:
    """Exclusive decayed prefix sum  S_t = sum_{i<t} e^{-(t-i-1) w + a_i} x_i  in log-scaled form.

    Blocked scan: chunks of length L are summed densely (O(T L)); each chunk is summarised
    towards its end, and the chunk summaries form the same problem with decay L*w over T/L
    tokens, solved recursively. Every partial sum carries its own max exponent, so the result
    is exact for any sign and size of w and a.

    Args:
        w: (C,) decay per step. a: (B, T, C) log-weights. x: (B, T, C, F) values.
    Returns:
        (m, s) with S_t = e^{m_t} s_t; m (B, T, C), s (B, T, C, F).
    """
    chunk = chunk or DEFAULT_CHUNK
    if chunk < 2:
        raise ValueError(f"chunk must be >= 2, got {chunk}")
    batch, steps, channels = a.shape
    if steps <= chunk:
        return _dense_prefix_sum(w, a, x)
    n_chunks = math.ceil(steps / chunk)
    pad = n_chunks * chunk - steps  # zero padding at the end only reaches padded rows
    a = F.pad(a, (0, 0, 0, pad)).view(batch, n_chunks, chunk, channels)
    x = F.pad(x, (0, 0, 0, 0, 0, pad)).view(batch, n_chunks, chunk, channels, -1)
    features = x.shape[-1]

    inner_m, inner_s = _dense_prefix_sum(
        w, a.reshape(-1, chunk, channels), x.reshape(-1, chunk, channels, features)
    )
    pos = torch.arange(chunk, device=a.device, dtype=a.dtype)[:, None]  # (L, 1)
    to_end = a - (chunk - 1 - pos) * w  # exponent of token i seen from the next chunk's start
    summary_m = to_end.detach().amax(dim=2)  # (B, n, C)
    summary_s = (torch.exp(to_end - summary_m[:, :, None]).unsqueeze(-1) * x).sum(dim=2)
    carry_m, carry_s = decayed_prefix_sum(chunk * w, summary_m, summary_s, chunk)
    carry_m = carry_m[:, :, None, :] - pos * w  # (B, n, L, C): decay from chunk start to token
    m, s = _log_add([
        (inner_m.view(batch, n_chunks, chunk, channels), inner_s.view(x.shape)),
        (carry_m, carry_s[:, :, None]),
    ])
    m = m.reshape(batch, -1, channels)[:, :steps]
    s = s.reshape(batch, -1, channels, features)[:, :steps]
    return m, s


def _check_inputs(w: Tensor, u: Tensor, k: Tensor, v: Tensor) -> None:
    if k.dim() != 3 or k.shape != v.shape:
        raise ValueError(f"bi_wkv expects k and v of equal shape (B, T, C); got k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)}")
    channels = k.shape[-1]
    for name, param in (("w", w), ("u", u)):
        if param.shape != (channels,):
            raise ValueError(f"bi_wkv expects {name} of shape (C,) = ({channels},); got {tuple(param.shape)}")
    if k.shape[1] == 0:
        raise ValueError("bi_wkv needs at least one token (T >= 1)")


def bi_wkv(w: Tensor, u: Tensor, k: Tensor, v: Tensor, chunk: int | None = None) -> Tensor:
    """Bi-WKV in linear time (see module docstring for the formula).

    Args:
        w: per-channel decay per token step, shape (C,).
        u: per-channel bonus of the current token, shape (C,).
        k, v: keys and values, shape (B, T, C).
        chunk: chunk length of the blocked scan (default: chosen from T).
    Returns:
        (B, T, C) tensor in the dtype of ``v``.
    """
    _check_inputs(w, u, k, v)
    out_dtype = v.dtype
    dtype = torch.float64 if v.dtype == torch.float64 else torch.float32
    w, u, k, v = (t.to(dtype) for t in (w, u, k, v))
    values = torch.stack((v, torch.ones_like(v)), dim=-1)  # numerator and denominator features
    left_m, left_s = decayed_prefix_sum(w, k, values, chunk)
    right_m, right_s = decayed_prefix_sum(w, k.flip(1), values.flip(1), chunk)
    _, total = _log_add([(left_m, left_s), (right_m.flip(1), right_s.flip(1)), (u + k, values)])
    return (total[..., 0] / total[..., 1]).to(out_dtype)


def bi_wkv_reference(w: Tensor, u: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Direct O(T^2) Bi-WKV in float64 (softmax over the exponents of the formula)."""
    _check_inputs(w, u, k, v)
    w, u, k, v = (t.double() for t in (w, u, k, v))
    steps = k.shape[1]
    pos = torch.arange(steps, dtype=torch.float64, device=k.device)
    gap = (pos[:, None] - pos[None, :]).abs() - 1.0  # (T, T): |t - i| - 1
    exponent = -gap[None, :, :, None] * w + k[:, None, :, :]  # (B, T(t), T(i), C)
    eye = torch.eye(steps, dtype=torch.bool, device=k.device)[None, :, :, None]
    exponent = torch.where(eye, (u + k)[:, None, :, :], exponent)
    weights = torch.softmax(exponent, dim=2)
    return (weights * v[:, None, :, :]).sum(dim=2)
