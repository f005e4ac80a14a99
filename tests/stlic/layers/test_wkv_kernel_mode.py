"""bi_wkv(mode="kernel") against a plain-loop transcription of the official CUDA kernel's
arithmetic (``biwkv4_cuda.cu`` of sjtu-medialab/RwkvCompress, forward pass), in float64."""
from __future__ import annotations

import math

import pytest
import torch

from stlic.layers.wkv import KERNEL_SEGMENTS, bi_wkv, bi_wkv_reference

NO_TERM = -1e38  # the kernel's MIN_VALUE: log-scale of an empty sum


def _merge(state, log_scale, num, den, sign=1.0):
    """Add sign * e^{log_scale} (num, den) to a running (max log-scale, num, den) sum."""
    top, s_num, s_den = state
    new = max(top, log_scale)
    keep, add = math.exp(top - new), sign * math.exp(log_scale - new)
    return new, s_num * keep + add * num, s_den * keep + add * den


def _kernel_channel(w, u, k, v, segments, eps):
    """One (batch, channel) row as the kernel computes it: ``segments`` threads, each owning
    the tokens [s, s + n) with s = p * L, L = ceil(T / segments)."""
    steps = len(k)
    length = -(-steps // segments)
    starts = [p * length for p in range(segments)]
    sizes = [min(steps - s, length) for s in starts]  # <= 0: a thread without tokens
    # pass 1, per thread: e^{k_i - w (i - s)} summed forward, e^{k_i - w (s + n - i)} backward
    ahead, behind = [], []
    for s, n in zip(starts, sizes):
        fwd = bwd = (NO_TERM, 0.0, 0.0)
        for i in range(s, s + n):
            fwd = _merge(fwd, k[i] - w * (i - s), v[i], 1.0)
            j = 2 * s + n - 1 - i
            bwd = _merge(bwd, k[j] - w * (s + n - j), v[j], 1.0)
        ahead.append(fwd)
        behind.append(bwd)
    y = [0.0] * steps
    for p, (s, n) in enumerate(zip(starts, sizes)):
        if n <= 0:
            continue
        # left state: earlier threads' backward sums, decayed by whole pieces
        left = (NO_TERM, 0.0, 0.0)
        for q in range(p):
            top, num, den = behind[q]
            left = _merge(left, top - w * (p - q - 1) * length, num, den)
        # right state: this and later threads' forward sums, then the own first token removed
        right = (NO_TERM, 0.0, 0.0)
        for q in range(p, segments):
            top, num, den = ahead[q]
            right = _merge(right, top - w * (q - p) * length, num, den)
        top_r, num_r, den_r = right
        right = (top_r, num_r - math.exp(k[s] - top_r) * v[s], den_r - math.exp(k[s] - top_r))
        for i in range(s, s + n):
            (top_l, num_l, den_l), (top_r, num_r, den_r) = left, right
            top = max(top_r, u + k[i], top_l)
            e_r, e_l, e_own = math.exp(top_r - top), math.exp(top_l - top), math.exp(u + k[i] - top)
            y[i] = (num_r * e_r + num_l * e_l + e_own * v[i]) / (den_r * e_r + den_l * e_l + e_own + eps)
            # step: left gains token i and decays by w; right grows by e^w and drops token i + 1
            top_l, num_l, den_l = _merge((top_l - w, num_l, den_l), k[i], v[i], 1.0)
            left = (top_l, num_l, den_l)
            nxt = (i + 1) % steps
            right = _merge((top_r + w, num_r, den_r), k[nxt] + w, v[nxt], 1.0, sign=-1.0)
    return y


def kernel_transcription(w, u, k, v, segments=KERNEL_SEGMENTS, eps=1e-6):
    """(B, T, C) output of the kernel's forward loops, in Python floats."""
    batch, _, channels = k.shape
    out = torch.zeros(k.shape, dtype=torch.float64)
    for b in range(batch):
        for c in range(channels):
            row = _kernel_channel(w[c].item(), u[c].item(), k[b, :, c].tolist(), v[b, :, c].tolist(),
                                  segments, eps)
            out[b, :, c] = torch.tensor(row, dtype=torch.float64)
    return out


def _inputs(steps, decay_t, batch=2, channels=3, seed=0, k_scale=1.0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    sign = torch.tensor([1.0, -1.0, 1.0] * channels, dtype=dtype)[:channels]
    w = sign * decay_t * (0.5 + torch.rand(channels, generator=gen, dtype=dtype)) / steps
    u = torch.randn(channels, generator=gen, dtype=dtype) * 3 / steps
    k = k_scale * torch.randn(batch, steps, channels, generator=gen, dtype=dtype)
    v = torch.randn(batch, steps, channels, generator=gen, dtype=dtype)
    return w, u, k, v


STEPS = [1, 5, 63, 64, 65, 66, 100, 127, 128, 129, 200]


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("decay_t", [3.0, 40.0])
def test_kernel_mode_matches_kernel_loops_float64(steps, decay_t):
    w, u, k, v = _inputs(steps, decay_t)
    expected = kernel_transcription(w, u, k, v, eps=0.0)
    torch.testing.assert_close(bi_wkv(w, u, k, v, mode="kernel"), expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(bi_wkv(w, u, k, v, mode="kernel", method="chunked", chunk=4), expected,
                               rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(bi_wkv_reference(w, u, k, v, mode="kernel"), expected,
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("steps,segments", [(10, 3), (33, 32), (70, 32)])
def test_kernel_mode_other_segment_counts(steps, segments):
    """``segments=32`` is the split of the newer biwkv4_cuda_new.cu."""
    w, u, k, v = _inputs(steps, 8.0, batch=1)
    expected = kernel_transcription(w, u, k, v, segments=segments, eps=0.0)
    torch.testing.assert_close(bi_wkv(w, u, k, v, mode="kernel", segments=segments), expected,
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("steps", [1, 17, 64])
def test_up_to_64_tokens_kernel_is_paper_formula_with_u_plus_w(steps):
    w, u, k, v = _inputs(steps, 5.0)
    torch.testing.assert_close(bi_wkv(w, u, k, v, mode="kernel"), bi_wkv_reference(w, u + w, k, v),
                               rtol=1e-10, atol=1e-10)


def test_beyond_64_tokens_kernel_differs_from_both_paper_forms():
    w, u, k, v = _inputs(130, 20.0)
    out = bi_wkv(w, u, k, v, mode="kernel")
    for bonus in (u, u + w):
        assert (out - bi_wkv_reference(w, bonus, k, v)).abs().max() > 1e-3


@pytest.mark.parametrize("steps", [64, 129])
def test_kernel_mode_float32(steps):
    w, u, k, v = _inputs(steps, 8.0)
    expected = kernel_transcription(w, u, k, v, eps=0.0)
    out = bi_wkv(w.float(), u.float(), k.float(), v.float(), mode="kernel")
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=2e-5)


def test_kernel_epsilon_is_negligible():
    """The kernel adds 1e-6 to its max-normalised denominator; we leave it out."""
    w, u, k, v = _inputs(100, 8.0, batch=1)
    torch.testing.assert_close(bi_wkv(w, u, k, v, mode="kernel"), kernel_transcription(w, u, k, v),
                               rtol=0, atol=1e-5)


@pytest.mark.parametrize("steps,segments,decay_t,k_scale", [
    (70, KERNEL_SEGMENTS, 8.0, 1.0),  # factorised, float64
    (23, 4, -6.0, 1.0),
    (30, 4, 900.0, 1.0),  # beyond the factorisation's range: dense formula
])
def test_kernel_mode_gradients_match_dense_formula(steps, segments, decay_t, k_scale):
    w, u, k, v = _inputs(steps, decay_t, k_scale=k_scale)
    upstream = torch.randn(k.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def grads(fn):
        leaves = [t.detach().clone().requires_grad_(True) for t in (w, u, k, v)]
        return torch.autograd.grad((fn(*leaves) * upstream).sum(), leaves)

    expected = grads(lambda *a: bi_wkv_reference(*a, mode="kernel", segments=segments))
    for method in ("auto", "chunked"):
        got = grads(lambda *a: bi_wkv(*a, mode="kernel", segments=segments, method=method, chunk=4))
        for name, ref, g in zip("wukv", expected, got):
            torch.testing.assert_close(g, ref, rtol=1e-8, atol=1e-8, msg=lambda m: f"{method} d/d{name}: {m}")


def test_kernel_mode_gradients_float32():
    w, u, k, v = _inputs(150, 8.0)
    upstream = torch.randn(k.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    leaves64 = [t.clone().requires_grad_(True) for t in (w, u, k, v)]
    leaves32 = [t.float().requires_grad_(True) for t in (w, u, k, v)]
    expected = torch.autograd.grad((bi_wkv_reference(*leaves64, mode="kernel") * upstream).sum(), leaves64)
    got = torch.autograd.grad((bi_wkv(*leaves32, mode="kernel").double() * upstream).sum(), leaves32)
    for name, ref, g in zip("wukv", expected, got):
        scale = ref.abs().max().item() + 1.0
        torch.testing.assert_close(g.double(), ref, rtol=0, atol=1e-4 * scale, msg=lambda m: f"d/d{name}: {m}")


def test_kernel_mode_gradcheck():
    w, u, k, v = (t.requires_grad_(True) for t in _inputs(11, 4.0, batch=1, channels=2))
    assert torch.autograd.gradcheck(lambda *a: bi_wkv(*a, mode="kernel", segments=3), (w, u, k, v))


def test_float32_beyond_range_falls_back_to_float64():
    w, u, k, v = _inputs(90, 8.0, k_scale=20.0)  # keys spread far beyond float32's factorisation
    expected = kernel_transcription(w, u, k, v, eps=0.0)
    out = bi_wkv(w.float(), u.float(), k.float(), v.float(), mode="kernel")
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


def test_bad_mode_raises():
    w, u, k, v = _inputs(5, 1.0)
    with pytest.raises(ValueError, match="mode"):
        bi_wkv(w, u, k, v, mode="cuda")
    with pytest.raises(ValueError, match="segments"):
        bi_wkv(w, u, k, v, mode="kernel", segments=0)
