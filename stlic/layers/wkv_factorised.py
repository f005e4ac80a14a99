"""Bi-WKV by whole-sequence factorisation: two exponentials per token and a few cumsums.

With b^L_i = k_i + i w, b^R_i = k_i - i w and e^L_i = e^{b^L_i - max b^L}, e^R_i = e^{b^R_i - max b^R}
(each in (0, 1]), every pair weight of the Bi-WKV factorises into a ratio,

    e^{-(t-i) w + k_i - k_t} = e^L_i / e^L_t  (i < t),      e^{-(i-t) w + k_i - k_t} = e^R_i / e^R_t  (i > t),

so with z_i = (v_i, 1) the output is y_t = n_t[0] / n_t[1], where n_t = N_t e^{-k_t} (the common
e^{k_t} cancels) is a sum of pieces ``c * X_t / e_t``: X a (segment-local or whole-sequence)
exclusive prefix or suffix sum of e_i z_i and c a per-channel coefficient. No logarithm is
taken, so signed weights (``mode="kernel"``) need no special care. The transpose (backward)
of a piece is ``c * e_i * sum_{t: i in S(t)} lambda_t / e_t`` and its d/dw follows from
d(e_i / e_t)/dw = +-(i - t) e_i / e_t, counted as the number of cut points between i and t:
sum over cuts c of <suffix sum of lambda/e from c, prefix sum of e z before c>. No pairwise
(T, T) tensor is formed: O(T) time and memory.

Valid when every term stays a normal float with headroom: the spread of b^L and b^R at most
``MAX_SPREAD`` and |u|, |w| at most ``MAX_PARAM`` (``scales``); callers use the log-scaled scan
(``stlic.layers.wkv_scan``) or float64 otherwise.
"""
from __future__ import annotations

import torch
from torch import Tensor

from stlic.layers.wkv_prefix import PrefixSums

__all__ = ["scales", "factorised_forward", "factorised_backward", "KERNEL_SEGMENTS", "segment_length"]

#: the official kernel (``biwkv4_cuda.cu``) splits the tokens into TOKEN_SPLIT = 512 / 8 segments
KERNEL_SEGMENTS = 64
#: largest spread of b^L, b^R: e^-30 ~ 9e-14 (float32), e^-250 ~ 3e-109 (float64)
MAX_SPREAD = {torch.float32: 30.0, torch.float64: 250.0}
#: largest |u|, |w|: keeps e^u, e^w and 1 / n_t[1] >= e^-u far from overflow
MAX_PARAM = {torch.float32: 20.0, torch.float64: 50.0}


def segment_length(steps: int, segments: int = KERNEL_SEGMENTS) -> int:
    """Tokens per segment of the official kernel: ceil(T / segments) (1 for T <= segments)."""
    return -(-steps // segments)


def scales(w: Tensor, u: Tensor, k: Tensor) -> tuple[Tensor, Tensor, bool]:
    """(b^L - max b^L, b^R - max b^R, fits) for k (B, C, T); ``fits`` (one host sync) says
    whether the factorised form is exact for these inputs in their dtype."""
    pos = torch.arange(k.shape[-1], device=k.device, dtype=k.dtype) * w[:, None]
    b_left, b_right = k + pos, k - pos
    b_left = b_left - b_left.amax(-1, keepdim=True)
    b_right = b_right - b_right.amax(-1, keepdim=True)
    spread = -torch.minimum(b_left.amin(-1), b_right.amin(-1)).min()
    bound = torch.maximum(w.abs().max(), u.abs().max())
    fits = bool(torch.stack((spread / MAX_SPREAD[k.dtype], bound / MAX_PARAM[k.dtype])).max() <= 1)
    return b_left, b_right, fits


def _not_segment_start(steps: int, length: int, like: Tensor) -> Tensor:
    return (torch.arange(steps, device=like.device) % length != 0).to(like.dtype)


def factorised_forward(w: Tensor, u: Tensor, v: Tensor, b_left: Tensor, b_right: Tensor,
                       segment: int | None, sums: PrefixSums):
    """(y, saved) for channels-first v (B, C, T) and ``scales`` b^L, b^R (consumed) that fit;
    ``segment`` None: paper mode, else the kernel mode's segment length."""
    e_left, e_right = b_left.exp_(), b_right.exp_()
    t_left = torch.stack((e_left * v, e_left), dim=2)  # e^L_i z_i, (B, C, 2, T)
    t_right = torch.stack((e_right * v, e_right), dim=2)
    p_left, p_right = sums.prefix(t_left), sums.suffix(t_right)
    ew, eu = torch.exp(w)[:, None, None], torch.exp(u)[:, None, None]
    n = p_left / e_left[:, :, None]
    n.addcdiv_(p_right, e_right[:, :, None])
    if segment is None:
        n.mul_(ew)
        n[:, :, 0].addcmul_(eu[:, 0], v)
        n[:, :, 1].add_(eu[:, 0])
        extra = ()
    else:
        z = torch.stack((v, torch.ones_like(v)), dim=2)
        start = _not_segment_start(v.shape[-1], segment, v)
        g_left = sums.segment_prefix(t_left, segment)  # s_t <= i < t
        h_right = sums.segment_prefix(t_right * start, segment)  # s_t < i < t
        n.addcmul_(ew - 1, g_left / e_left[:, :, None])
        n.addcmul_(1 - ew, h_right / e_right[:, :, None])
        n.addcmul_(eu + (1 - ew) * start, z)
        extra = (g_left, h_right, start)
    y = n[:, :, 0] / n[:, :, 1]
    return y, (e_left, e_right, p_left, p_right, n[:, :, 1], y, *extra)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    """sum over batch, features and tokens of a * b, per channel: (B, C, F, T) -> (C,)."""
    return (a * b).sum(dim=(0, 2, 3))


def factorised_backward(w: Tensor, u: Tensor, v: Tensor, grad_y: Tensor, saved, segment: int | None,
                        sums: PrefixSums):
    """(grad_w, grad_u, grad_k, grad_v) of ``factorised_forward``."""
    e_left, e_right, p_left, p_right, den, y = saved[:6]
    scaled = grad_y / den
    lam = torch.stack((scaled, -scaled * y), dim=2)  # e^{k_t} lambda_t
    el, er = e_left[:, :, None], e_right[:, :, None]
    u_left, u_right = lam / el, lam / er
    suf_left, pre_right = sums.suffix(u_left), sums.prefix(u_right)
    ew, eu = torch.exp(w), torch.exp(u)
    if segment is None:
        back = el * suf_left
        back.addcmul_(er, pre_right).mul_(ew[:, None, None]).addcmul_(eu[:, None, None], lam)
        grad_w = -ew * torch.addcmul(suf_left * p_left, pre_right, p_right).sum(dim=(0, 2, 3))
    else:
        z = torch.stack((v, torch.ones_like(v)), dim=2)
        g_left, h_right, start = saved[6:]
        seg_left, seg_right = sums.segment_suffix(u_left, segment), sums.segment_suffix(u_right, segment)
        diag = eu[:, None, None] + (1 - ew)[:, None, None] * start
        back = el * suf_left + er * pre_right
        back.addcmul_((ew - 1)[:, None, None], el * seg_left)
        back.addcmul_((1 - ew)[:, None, None], er * seg_right * start)
        back.addcmul_(diag, lam)
        # pieces c * X / e: c' <lam, X / e> -+ c <inclusive transposed sums, X> (see module doc)
        grad_w = (-_dot(suf_left + u_left, p_left) - _dot(pre_right, p_right + er * z)
                  + ew * _dot(u_left, g_left) - (ew - 1) * _dot(seg_left + u_left, g_left)
                  - ew * _dot(u_right, h_right) + (1 - ew) * _dot(seg_right + u_right, h_right)
                  - ew * _dot(lam * start, z))
    grad_u = eu * (scaled * (v - y)).sum(dim=(0, 2))  # e^u sum_t <lambda_t, z_t> e^{k_t}
    grad_v = back[:, :, 0]
    grad_k = back[:, :, 0] * v + back[:, :, 1]
    return grad_w, grad_u, grad_k, grad_v
