"""Bidirectional WKV (Bi-WKV) attention of Vision-RWKV, as used by LALIC, in two modes.

``mode="paper"`` (default, used for our own training) is the formula of the papers (Duan et
al., "Vision-RWKV", ICLR 2025, Eq. 4; Feng et al., "Linear Attention Modeling for Learned
Image Compression", CVPR 2025), for one channel with per-step decay ``w`` and self bonus ``u``::

    y_t = ( sum_{i != t} e^{-(|t-i|-1) w + k_i} v_i + e^{u + k_t} v_t )
        / ( sum_{i != t} e^{-(|t-i|-1) w + k_i}     + e^{u + k_t}     )

``mode="kernel"`` is what the official LALIC CUDA kernel computes (``biwkv4_cuda.cu`` of
sjtu-medialab/RwkvCompress, from Vision-RWKV), the function its released weights were trained
with; it is selected when official weights are loaded (``stlic.models.lalic_keys``). The
kernel cuts the T tokens into ``segments`` = 64 (TOKEN_SPLIT) pieces of L = ceil(T / 64)
tokens, s_t the first token of t's piece, and its weight of token i in y_t is e^{k_i} times::

    e^{-|t-i| w}                                    i > t, or i < s_t (sums carried between pieces)
    e^{-(|t-i|-1) w} + [i > s_t] (1 - e^w) e^{(t-i) w}   s_t <= i < t (inside t's piece)
    e^u + [t > s_t] (1 - e^w)                          i = t

For T <= 64 (L = 1) that is the paper's formula with u replaced by u + w (both scaled by
e^{-w}). For T > 64 the in-piece left sums decay by |t-i| - 1 while carried sums decay by
|t-i|, and the right sum, which the kernel walks by multiplying by e^w and subtracting the next
token times e^{k+w} where e^{k} was added, leaves (1 - e^w) e^{k_i} for every token i after the
piece start, growing by e^w per step (so the terms can be negative for w > 0). The kernel
adds 1e-6 to its max-normalised denominator; we do not. The newer ``biwkv4_cuda_new.cu``, which
the repository's ``models/lalic.py`` builds since its last commit, computes the same function
with 32 pieces (``segments=32``), but calls ``__shfl_sync`` with a full mask inside loops whose
trip count depends on the lane, which is undefined behaviour in CUDA.

The modules pass ``w = decay / T`` and ``u = boost / T``; ``w`` enters the exponent as given,
with no ``exp`` (the kernel's exponents are ``k_i - w * distance``), unlike causal RWKV-4,
which passes ``-exp(decay)``. A negative ``w`` therefore makes far tokens weigh *more*.

``bi_wkv`` runs in O(T): by whole-sequence factorisation (``stlic.layers.wkv_factorised``:
two exponentials per token, prefix sums by cumsum, or by chunked matmuls with
``method="chunked"``, ``stlic.layers.wkv_prefix``) when the exponents' spread allows it, the
usual case; otherwise, in paper mode, by the blocked log-scaled scan (``stlic.layers.wkv_scan``,
the only path before, exact for any sign and size of ``w`` and any range of ``k``;
``method="scan"`` forces it), in kernel mode by the factorisation in float64 and, beyond that,
the dense O(T^2) formula. Checking the spread is one host synchronisation per call. Backward
passes are analytic. ``bi_wkv_reference`` is the direct O(T^2) formula in float64 for tests.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from stlic.layers.wkv_factorised import (
    KERNEL_SEGMENTS,
    factorised_backward,
    factorised_forward,
    scales,
    segment_length,
)
from stlic.layers.wkv_prefix import PrefixSums
from stlic.layers.wkv_scan import DEFAULT_CHUNK, both_directions, decayed_prefix_sum, log_add

__all__ = ["bi_wkv", "bi_wkv_channels_first", "bi_wkv_reference", "decayed_prefix_sum", "MODES", "METHODS", "KERNEL_SEGMENTS"]

MODES = ("paper", "kernel")
#: "auto": factorised with cumsums (fallbacks as in the module doc); "chunked": the same with
#: prefix sums in chunked matmul form (GPUs); "scan": the log-scaled blocked scan (paper mode)
METHODS = ("auto", "chunked", "scan")


class _FactorisedBiWKV(torch.autograd.Function):
    """Bi-WKV on channels-first (B, C, T) tensors by ``stlic.layers.wkv_factorised``."""

    @staticmethod
    def forward(ctx, w: Tensor, u: Tensor, k: Tensor, v: Tensor, b_left: Tensor, b_right: Tensor,
                segment: int | None, sums: PrefixSums) -> Tensor:
        y, saved = factorised_forward(w, u, v, b_left, b_right, segment, sums)
        ctx.segment, ctx.sums = segment, sums
        ctx.save_for_backward(w, u, v, *saved)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: Tensor):
        w, u, v, *saved = ctx.saved_tensors
        grads = factorised_backward(w, u, v, grad_y, saved, ctx.segment, ctx.sums)
        return (*grads, None, None, None, None)


class _BiWKV(torch.autograd.Function):
    """Bi-WKV on channels-first (B, C, T) tensors with an analytic backward.

    With D_t the denominator, y_t the output, g_t = dL/dy_t and lambda_t = (g_t, -g_t y_t) / D_t:
      dv_i = e^{k_i} Q_i[0],  dk_i = e^{k_i} (Q_i[0] v_i + Q_i[1]),  Q_i = sum_t K_ti lambda_t
      du   = sum_t e^{u + k_t} <lambda_t, (v_t, 1)>
      dw   = -e^{-w} sum_t ( <R_t, S^L_t> + <L_t, S^R_t> )
    where K_ti = e^{-(|t-i|-1) w} (e^u on the diagonal) is symmetric, S^L / S^R are the forward
    left / right sums of e^{k_i} (v_i, 1), and L_t / R_t the left / right sums of lambda.
    (sum_t R_t S^L_t counts each pair i < s exactly s - i - 1 times: d/dw of e^{-(s-i-1) w}.)
    """

    @staticmethod
    def forward(ctx, w: Tensor, u: Tensor, k: Tensor, v: Tensor, chunk: int) -> Tensor:
        values = torch.stack((v, torch.ones_like(v)), dim=2)
        left, right = both_directions(w, k, values, chunk)
        own_m = u[:, None] + k
        top, total = log_add([left, right, (own_m, values)])
        y = total[:, :, 0] / total[:, :, 1]
        log_den = top + total[:, :, 1].log()
        ctx.chunk = chunk
        ctx.save_for_backward(w, u, k, v, y, log_den, *left, *right)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: Tensor):
        w, u, k, v, y, log_den, left_m, left_s, right_m, right_s = ctx.saved_tensors
        lam = torch.stack((grad_y, -grad_y * y), dim=2)  # times e^{-log_den}
        lam_left, lam_right = both_directions(w, -log_den, lam, ctx.chunk)
        own_m = u[:, None] - log_den
        q_m, q_s = log_add([lam_left, lam_right, (own_m, lam)])
        scale = torch.exp(k + q_m)
        grad_v = scale * q_s[:, :, 0]
        grad_k = scale * (q_s[:, :, 0] * v + q_s[:, :, 1])
        grad_u = (torch.exp(own_m + k) * grad_y * (v - y)).sum(dim=(0, 2))
        pairs = (torch.exp(lam_right[0] + left_m - w[:, None]) * (lam_right[1] * left_s).sum(2)
                 + torch.exp(lam_left[0] + right_m - w[:, None]) * (lam_left[1] * right_s).sum(2))
        grad_w = -pairs.sum(dim=(0, 2))
        return grad_w, grad_u, grad_k, grad_v, None


#: channels per piece of the inference path: its (B, 16, T) temporaries stay in cache far longer
INFERENCE_CHANNELS = 16


def _factorised_in_channel_chunks(w: Tensor, u: Tensor, k: Tensor, v: Tensor, segment: int | None,
                                  sums: PrefixSums) -> Tensor | None:
    """Inference (no autograd): the factorised form on ``INFERENCE_CHANNELS`` channels at a time.

    Channels are independent, so the result is the whole-tensor one; the temporaries (about ten
    per channel and token) shrink from (B, C, T) to (B, 16, T): less peak memory and faster
    element-wise passes. None when some piece does not fit the factorised form.
    """
    y = torch.empty_like(v)
    for start in range(0, k.shape[1], INFERENCE_CHANNELS):
        part = slice(start, start + INFERENCE_CHANNELS)
        b_left, b_right, fits = scales(w[part], u[part], k[:, part])
        if not fits:
            return None
        y[:, part] = factorised_forward(w[part], u[part], v[:, part], b_left, b_right, segment, sums)[0]
    return y


def _check_inputs(w: Tensor, u: Tensor, k: Tensor, v: Tensor) -> None:
    if k.dim() != 3 or k.shape != v.shape:
        raise ValueError(f"bi_wkv expects k and v of equal shape (B, T, C); got k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)}")
    channels = k.shape[-1]
    for name, param in (("w", w), ("u", u)):
        if param.shape != (channels,):
            raise ValueError(f"bi_wkv expects {name} of shape (C,) = ({channels},); "
                             f"got {tuple(param.shape)}")
    if k.shape[1] == 0:
        raise ValueError("bi_wkv needs at least one token (T >= 1)")


def bi_wkv(w: Tensor, u: Tensor, k: Tensor, v: Tensor, chunk: int = DEFAULT_CHUNK,
           mode: str = "paper", segments: int = KERNEL_SEGMENTS, method: str = "auto") -> Tensor:
    """Bi-WKV in linear time (see the module docstring for both modes' formulas).

    Args:
        w: per-channel decay per token step, shape (C,).
        u: per-channel bonus of the current token, shape (C,).
        k, v: keys and values, shape (B, T, C).
        chunk: block length (>= 2) of the log-scaled scan and of the chunked matmul form; any
            value gives the same result.
        mode: ``"paper"`` (the papers' formula) or ``"kernel"`` (the official CUDA kernel's).
        segments: pieces the kernel mode cuts the tokens into (64 in ``biwkv4_cuda.cu``).
        method: one of ``METHODS``; all give the same result.
    Returns:
        (B, T, C) tensor in the dtype of ``v``; computed in float32 (float64 for float64 input).
        Differentiable once in w, u, k, v (analytic backward, no double backward).
    """
    _check_inputs(w, u, k, v)
    y = bi_wkv_channels_first(w, u, k.transpose(1, 2), v.transpose(1, 2), chunk, mode, segments, method)
    return y.transpose(1, 2)


def bi_wkv_channels_first(w: Tensor, u: Tensor, k: Tensor, v: Tensor, chunk: int = DEFAULT_CHUNK,
                          mode: str = "paper", segments: int = KERNEL_SEGMENTS, method: str = "auto") -> Tensor:
    """``bi_wkv`` on channels-first keys and values (B, C, T), returning (B, C, T): the layout the
    algorithms work in (prefix sums along the last axis), so no transposes are needed when the
    projections write it directly (``stlic.layers.rwkv.SpatialMix``)."""
    _check_inputs(w, u, k.transpose(1, 2), v.transpose(1, 2))
    if chunk < 2:
        raise ValueError(f"chunk must be >= 2, got {chunk}")
    if mode not in MODES:
        raise ValueError(f"bi_wkv mode must be one of {MODES}, got {mode!r}")
    if segments < 1:
        raise ValueError(f"segments must be >= 1, got {segments}")
    if method not in METHODS or method == "scan" and mode == "kernel":
        raise ValueError(f"bi_wkv method must be one of {METHODS} ('scan' in paper mode only), "
                         f"got {method!r} in mode {mode!r}")
    out_dtype = v.dtype
    dtype = torch.float64 if v.dtype == torch.float64 else torch.float32
    segment = segment_length(k.shape[-1], segments) if mode == "kernel" else None
    sums = PrefixSums(chunk if method == "chunked" else None)
    attempts = () if method == "scan" else (dtype, torch.float64) if mode == "kernel" else (dtype,)
    inference = not (torch.is_grad_enabled() and any(t.requires_grad for t in (w, u, k, v)))
    for attempt in attempts:
        wc, uc = w.to(attempt), u.to(attempt)
        kc, vc = (t.to(attempt).contiguous() for t in (k, v))
        if inference:
            y = _factorised_in_channel_chunks(wc, uc, kc, vc, segment, sums)
            if y is not None:
                return y.to(out_dtype)
            continue
        b_left, b_right, fits = scales(wc, uc, kc)
        if fits:
            return _FactorisedBiWKV.apply(wc, uc, kc, vc, b_left, b_right, segment, sums).to(out_dtype)
    if mode == "kernel":
        y = bi_wkv_reference(w, u, k.transpose(1, 2), v.transpose(1, 2), mode, segments)
        return y.transpose(1, 2).to(out_dtype)
    k, v = (t.to(dtype).contiguous() for t in (k, v))
    return _BiWKV.apply(w.to(dtype), u.to(dtype), k, v, chunk).to(out_dtype)


def _kernel_exponents(w: Tensor, u: Tensor, steps: int, segments: int) -> tuple[Tensor, Tensor]:
    """Kernel mode's weight of token i in y_t as sum_j sign_j e^{expo_j}: (J, T, T, C) each."""
    pos = torch.arange(steps, dtype=w.dtype, device=w.device)
    start = (pos // segment_length(steps, segments)) * segment_length(steps, segments)
    t, i = pos[:, None, None], pos[None, :, None]
    s_t = start[:, None, None]
    inf = torch.tensor(float("inf"), dtype=w.dtype, device=w.device)
    inside = (i >= s_t) & (i < t)
    carried = torch.where(inside, -inf, -(t - i).abs() * w)
    carried = torch.where(i == t, -inf, carried)
    in_piece = torch.where(inside, -(t - i - 1) * w, -inf)
    growth = torch.where(inside & (i > s_t) | (i == t) & (t > s_t), (t - i) * w, -inf)
    own = torch.where(i == t, u + 0 * t, -inf)
    one_minus = 1 - torch.exp(w)
    expo = torch.stack([carried, in_piece, growth + one_minus.abs().log(), own]).expand(-1, -1, -1, w.numel())
    sign = torch.stack([torch.ones_like(w), torch.ones_like(w), torch.sign(one_minus), torch.ones_like(w)])
    return expo, sign[:, None, None, :].expand_as(expo)


def bi_wkv_reference(w: Tensor, u: Tensor, k: Tensor, v: Tensor, mode: str = "paper",
                     segments: int = KERNEL_SEGMENTS) -> Tensor:
    """Direct O(T^2) Bi-WKV in float64 (each row of weights stabilised by its largest exponent)."""
    _check_inputs(w, u, k, v)
    if mode not in MODES:
        raise ValueError(f"bi_wkv mode must be one of {MODES}, got {mode!r}")
    w, u, k, v = (t.double() for t in (w, u, k, v))
    steps = k.shape[1]
    if mode == "paper":
        pos = torch.arange(steps, dtype=torch.float64, device=k.device)
        gap = (pos[:, None] - pos[None, :]).abs() - 1.0  # (T, T): |t - i| - 1
        exponent = -gap[None, :, :, None] * w + k[:, None, :, :]  # (B, T(t), T(i), C)
        eye = torch.eye(steps, dtype=torch.bool, device=k.device)[None, :, :, None]
        exponent = torch.where(eye, (u + k)[:, None, :, :], exponent)
        weights = torch.softmax(exponent, dim=2)
        return (weights * v[:, None, :, :]).sum(dim=2)
    expo, sign = _kernel_exponents(w, u, steps, segments)
    expo = expo[:, None] + k[None, :, None, :, :]  # (J, B, T(t), T(i), C)
    top = expo.amax(dim=(0, 3), keepdim=True).detach()
    weights = (sign[:, None] * torch.exp(expo - top)).sum(dim=0)  # (B, T, T, C)
    return (weights * v[:, None]).sum(dim=2) / weights.sum(dim=2)
