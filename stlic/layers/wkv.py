"""Bidirectional WKV (Bi-WKV) attention of Vision-RWKV, as used by LALIC.

For one channel with per-step decay ``w`` and self bonus ``u`` (Duan et al., "Vision-RWKV",
ICLR 2025, Eq. 4; Feng et al., "Linear Attention Modeling for Learned Image Compression",
CVPR 2025)::

    y_t = ( sum_{i != t} e^{-(|t-i|-1) w + k_i} v_i + e^{u + k_t} v_t )
        / ( sum_{i != t} e^{-(|t-i|-1) w + k_i}     + e^{u + k_t}     )

The modules pass ``w = decay / T`` and ``u = boost / T``. ``w`` enters the exponent as given,
with no ``exp``: the Vision-RWKV Bi-WKV CUDA kernel (``wkv_cuda.cu``, exponents
``k_i - w * distance``) that LALIC calls with ``decay / T`` uses the raw value, unlike causal
RWKV-4 where the module passes ``-exp(decay)``. A negative ``w`` therefore makes far tokens
weigh *more*; both signs are handled without overflow. The CUDA kernel adds 1e-6 to the
denominator; we do not (it is a sum of positive terms, never zero here).

``bi_wkv`` is a blocked scan (blocks of L = ``chunk`` tokens, default 32, recursing over block
summaries): O(T) time with the factorised in-block sums, O(T L) where a block needs the dense
fallback, and O(T) memory kept for backward. Every partial sum is held as a log-scale ``m``
and a normalised sum ``s`` (true value ``e^m * s``, the "pp/aa/bb" trick of RWKV), so it is
exact for any sign and size of ``w`` and any range of ``k``. The backward pass is analytic and
reuses the same prefix sums (the kernel is a symmetric Toeplitz matrix: its own transpose).
``bi_wkv_reference`` is the direct O(T^2) formula in float64 for tests.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["bi_wkv", "bi_wkv_reference", "decayed_prefix_sum"]

DEFAULT_CHUNK = 32

LogScaled = tuple[Tensor, Tensor]
"""A sum held as (m, s): true value e^m * s; m (B, C, ...) is -inf for an empty sum and
s (B, C, F, ...) holds F value features (features before tokens: contiguous scans)."""


def _log_add(pieces: Sequence[LogScaled]) -> LogScaled:
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


# Largest exponent spread inside a block for which the factorised (cumsum) path keeps every
# term a normal float with headroom: e^-40 ~ 4e-18 (float32), e^-300 ~ 5e-131 (float64).
_FACTORISED_MAX_SPREAD = {torch.float32: 40.0, torch.float64: 300.0}


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

    With b_i = a_i + i w (block-local i) the prefix sum factorises,
        sum_{i<t} e^{-(t-i-1) w + a_i} x_i = e^{max b - (t-1) w} * sum_{i<t} e^{b_i - max b} x_i,
    an exclusive cumsum: O(L) per block. Used when the spread of b in every block is small
    enough that no term underflows; otherwise the exact dense O(L^2) form is used.
    a: (B, C, n, L); x: (B, C, F, n, L). Returns ((m, s) per token, (m, s) per block).
    """
    steps = a.shape[-1]
    pos = torch.arange(steps, device=a.device, dtype=a.dtype)
    b = a + pos * w[:, None, None]
    b_max = b.amax(dim=-1)  # (B, C, n)
    if (b_max - b.amin(dim=-1)).max() <= _FACTORISED_MAX_SPREAD[a.dtype]:
        terms = b.sub_(b_max[..., None]).exp_().unsqueeze(2) * x
        inclusive = terms.cumsum(dim=-1)
        inner_s = F.pad(inclusive[..., :-1], (1, 0))
        inner_m = b_max[..., None] - (pos - 1.0) * w[:, None, None]
        inner_m[..., 0] = float("-inf")  # nothing precedes a block's first token
        return (inner_m, inner_s), (b_max - (steps - 1) * w[:, None], inclusive[..., -1])
    to_end = b - (steps - 1) * w[:, None, None]  # = a_i - (L-1-i) w
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
    m, s = _log_add([inner, (carry_m, carry_s[..., None])])
    m, s = m.reshape(batch, channels, -1), s.reshape(batch, channels, features, -1)
    return m[..., :steps], s[..., :steps]


def _both_directions(w: Tensor, a: Tensor, x: Tensor, chunk: int) -> tuple[LogScaled, LogScaled]:
    """Left sums (i < t) and right sums (i > t), computed in one batched scan."""
    batch = a.shape[0]
    m, s = decayed_prefix_sum(w, torch.cat([a, a.flip(-1)]), torch.cat([x, x.flip(-1)]), chunk)
    return (m[:batch], s[:batch]), (m[batch:].flip(-1), s[batch:].flip(-1))


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
        left, right = _both_directions(w, k, values, chunk)
        own_m = u[:, None] + k
        top, total = _log_add([left, right, (own_m, values)])
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
        lam_left, lam_right = _both_directions(w, -log_den, lam, ctx.chunk)
        own_m = u[:, None] - log_den
        q_m, q_s = _log_add([lam_left, lam_right, (own_m, lam)])
        scale = torch.exp(k + q_m)
        grad_v = scale * q_s[:, :, 0]
        grad_k = scale * (q_s[:, :, 0] * v + q_s[:, :, 1])
        grad_u = (torch.exp(own_m + k) * grad_y * (v - y)).sum(dim=(0, 2))
        pairs = (torch.exp(lam_right[0] + left_m - w[:, None]) * (lam_right[1] * left_s).sum(2)
                 + torch.exp(lam_left[0] + right_m - w[:, None]) * (lam_left[1] * right_s).sum(2))
        grad_w = -pairs.sum(dim=(0, 2))
        return grad_w, grad_u, grad_k, grad_v, None


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


def bi_wkv(w: Tensor, u: Tensor, k: Tensor, v: Tensor, chunk: int = DEFAULT_CHUNK) -> Tensor:
    """Bi-WKV in linear time (see the module docstring for the formula).

    Args:
        w: per-channel decay per token step, shape (C,).
        u: per-channel bonus of the current token, shape (C,).
        k, v: keys and values, shape (B, T, C).
        chunk: block length of the scan (>= 2); any value gives the same result.
    Returns:
        (B, T, C) tensor in the dtype of ``v``; computed in float32 (float64 for float64 input).
        Differentiable once in w, u, k, v (analytic backward, no double backward).
    """
    _check_inputs(w, u, k, v)
    if chunk < 2:
        raise ValueError(f"chunk must be >= 2, got {chunk}")
    out_dtype = v.dtype
    dtype = torch.float64 if v.dtype == torch.float64 else torch.float32
    w, u = w.to(dtype), u.to(dtype)
    k, v = (t.to(dtype).transpose(1, 2).contiguous() for t in (k, v))  # (B, C, T)
    y = _BiWKV.apply(w, u, k, v, chunk)
    return y.transpose(1, 2).to(out_dtype)


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
