"""bi_wkv (linear time) against the direct O(T^2) float64 formula: values and gradients."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from stlic.layers.wkv import DEFAULT_CHUNK, METHODS, bi_wkv, bi_wkv_reference, decayed_prefix_sum
from stlic.layers.wkv_factorised import scales


def _inputs(steps: int, decay_times_t: float, k_scale: float = 1.0, k_shift: float = 0.0,
            batch: int = 2, channels: int = 3, seed: int = 0, dtype=torch.float64):
    """w = decay / T with |decay| ~ decay_times_t, so |w| * T ~ decay_times_t."""
    gen = torch.Generator().manual_seed(seed)
    decay = decay_times_t * (0.5 + torch.rand(channels, generator=gen, dtype=dtype))
    w = decay / steps
    u = torch.randn(channels, generator=gen, dtype=dtype)
    k = k_shift + k_scale * torch.randn(batch, steps, channels, generator=gen, dtype=dtype)
    v = torch.randn(batch, steps, channels, generator=gen, dtype=dtype)
    return w, u, k, v


def _loop_formula(w, u, k, v):
    """The paper's formula term by term (Python floats, math.exp, no stabilisation): tiny cases."""
    w, u, k, v = (t.tolist() for t in (w, u, k, v))
    batch, steps, channels = len(k), len(k[0]), len(k[0][0])
    out = [[[0.0] * channels for _ in range(steps)] for _ in range(batch)]
    for b, t, c in itertools.product(range(batch), range(steps), range(channels)):
        num = den = 0.0
        for i in range(steps):
            expo = u[c] + k[b][t][c] if i == t else -(abs(t - i) - 1) * w[c] + k[b][i][c]
            num, den = num + math.exp(expo) * v[b][i][c], den + math.exp(expo)
        out[b][t][c] = num / den
    return torch.tensor(out, dtype=torch.float64)


def test_reference_matches_term_by_term_formula():
    w, u, k, v = _inputs(6, decay_times_t=3.0, batch=1, channels=2)
    torch.testing.assert_close(bi_wkv_reference(w, u, k, v), _loop_formula(w, u, k, v))


def test_single_token_returns_value():
    w, u, k, v = _inputs(1, decay_times_t=1.0)
    torch.testing.assert_close(bi_wkv(w, u, k, v), v)


CASES = [
    # steps, |w| * T, k scale, k shift, chunk
    (1, 1.0, 1.0, 0.0, DEFAULT_CHUNK),  # single token: y = v, only dv is nonzero
    (2, 1.0, 1.0, 0.0, DEFAULT_CHUNK),
    (16, 5.0, 1.0, 0.0, 16),  # exactly one chunk
    (17, 5.0, 1.0, 0.0, 16),  # one token past the chunk
    (61, 60.0, 1.0, 0.0, 4),  # several recursion levels, T not a multiple of the chunk
    (61, -60.0, 1.0, 0.0, 4),  # negative decay: far tokens dominate
    (100, 500.0, 1.0, 0.0, 8),
    (100, -500.0, 1.0, 0.0, 8),
    (40, 1.0, 1.0, 60.0, 4),  # large k
    (40, 80.0, 30.0, 0.0, 4),  # k spread far beyond float32's exp range, local attention
    (40, -80.0, 30.0, 0.0, 4),
    (300, 50.0, 3.0, 0.0, DEFAULT_CHUNK),
]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("steps,decay_t,k_scale,k_shift,chunk", CASES)
def test_values_match_reference_float64(steps, decay_t, k_scale, k_shift, chunk, method):
    w, u, k, v = _inputs(steps, decay_t, k_scale, k_shift)
    torch.testing.assert_close(bi_wkv(w, u, k, v, chunk=chunk, method=method), bi_wkv_reference(w, u, k, v),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("steps,decay_t,k_scale,k_shift,chunk", CASES)
def test_values_match_reference_float32(steps, decay_t, k_scale, k_shift, chunk, method):
    w, u, k, v = _inputs(steps, decay_t, k_scale, k_shift)
    out = bi_wkv(w.float(), u.float(), k.float(), v.float(), chunk=chunk, method=method)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), bi_wkv_reference(w, u, k, v), rtol=0, atol=2e-5)


def _grads(fn, w, u, k, v, upstream, **kwargs):
    leaves = [t.detach().clone().requires_grad_(True) for t in (w, u, k, v)]
    out = fn(*leaves, **kwargs)
    return torch.autograd.grad((out.double() * upstream).sum(), leaves)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("steps,decay_t,k_scale,k_shift,chunk", CASES)
def test_gradients_match_reference(steps, decay_t, k_scale, k_shift, chunk, method):
    w, u, k, v = _inputs(steps, decay_t, k_scale, k_shift)
    upstream = torch.randn(k.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = _grads(bi_wkv_reference, w, u, k, v, upstream)
    got64 = _grads(bi_wkv, w, u, k, v, upstream, chunk=chunk, method=method)
    got32 = _grads(bi_wkv, w.float(), u.float(), k.float(), v.float(), upstream, chunk=chunk,
                   method=method)
    for name, ref, g64, g32 in zip("wukv", expected, got64, got32):
        torch.testing.assert_close(g64, ref, rtol=1e-8, atol=1e-8, msg=lambda m: f"d/d{name}: {m}")
        # float32 d/dw sums distance-weighted differences v_i - y_t that nearly cancel when a
        # large negative decay makes one far token dominate; the dense O(T^2) softmax evaluated
        # in float32 misses by 2e-4 relative in the -500 case too, hence the looser bound for w.
        scale = (ref.abs().max().item() + 1.0) * (1e-3 if name == "w" else 1e-4)
        torch.testing.assert_close(g32.double(), ref, rtol=0, atol=scale,
                                   msg=lambda m: f"float32 d/d{name}: {m}")


@pytest.mark.parametrize("method", METHODS)
def test_gradcheck_float64_tiny(method):
    w, u, k, v = (t.requires_grad_(True) for t in _inputs(7, decay_times_t=-4.0, batch=1, channels=2))
    assert torch.autograd.gradcheck(lambda *a: bi_wkv(*a, chunk=3, method=method), (w, u, k, v))


def test_decayed_prefix_sum_matches_brute_force():
    gen = torch.Generator().manual_seed(3)
    batch, steps, channels, features = 2, 23, 3, 2
    w = torch.randn(channels, generator=gen, dtype=torch.float64)
    a = 5 * torch.randn(batch, steps, channels, generator=gen, dtype=torch.float64)
    x = torch.randn(batch, steps, channels, features, generator=gen, dtype=torch.float64)
    m, s = decayed_prefix_sum(w, a.transpose(1, 2), x.permute(0, 2, 3, 1), chunk=4)  # (B, C, F, T)
    m, s = m.transpose(1, 2), s.permute(0, 3, 1, 2)
    expected = torch.zeros(batch, steps, channels, features, dtype=torch.float64)
    for t in range(steps):
        for i in range(t):
            expected[:, t] += torch.exp(-(t - i - 1) * w + a[:, i])[..., None] * x[:, i]
    assert torch.isneginf(m[:, 0]).all() and (s[:, 0] == 0).all()  # empty sum before token 0
    torch.testing.assert_close(torch.exp(m)[..., None] * s, expected)


def test_low_precision_input_keeps_dtype():
    w, u, k, v = _inputs(20, decay_times_t=2.0, dtype=torch.float32)
    out = bi_wkv(w, u, k.bfloat16(), v.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.double(), bi_wkv_reference(w, u, k.bfloat16(), v.bfloat16()),
                               rtol=0, atol=2e-2)


@pytest.mark.parametrize("shapes,match", [
    (((3,), (3,), (2, 5, 3), (2, 5, 4)), "equal shape"),
    (((3,), (3,), (5, 3), (5, 3)), r"\(B, T, C\)"),
    (((4,), (3,), (2, 5, 3), (2, 5, 3)), "w of shape"),
    (((3,), (1,), (2, 5, 3), (2, 5, 3)), "u of shape"),
    (((3,), (3,), (2, 0, 3), (2, 0, 3)), "at least one token"),
])
def test_bad_shapes_raise(shapes, match):
    with pytest.raises(ValueError, match=match):
        bi_wkv(*(torch.zeros(s) for s in shapes))


def test_bad_chunk_raises():
    w, u, k, v = _inputs(5, 1.0)
    with pytest.raises(ValueError, match="chunk"):
        bi_wkv(w, u, k, v, chunk=1)


def test_bad_method_raises():
    w, u, k, v = _inputs(5, 1.0)
    with pytest.raises(ValueError, match="method"):
        bi_wkv(w, u, k, v, method="triton")
    with pytest.raises(ValueError, match="paper mode only"):
        bi_wkv(w, u, k, v, mode="kernel", method="scan")


def test_decayed_prefix_sum_rejects_low_precision():
    a = torch.zeros(1, 2, 5, dtype=torch.float16)
    with pytest.raises(ValueError, match="float32 or all float64"):
        decayed_prefix_sum(torch.zeros(2, dtype=torch.float16), a, torch.zeros(1, 2, 1, 5, dtype=torch.float16))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("steps,decay_t,k_scale,expect_fits", [
    (300, 5.0, 1.0, True),  # the usual case: whole-sequence factorisation
    (100, 500.0, 1.0, False),  # exponent spread beyond any float: blocked log-scaled scan
])
def test_both_paths_are_taken_and_match_reference(dtype, steps, decay_t, k_scale, expect_fits):
    w, u, k, v = _inputs(steps, decay_t, k_scale, dtype=dtype)
    _, _, fits = scales(w, u, k.transpose(1, 2))
    assert fits == expect_fits
    atol = 1e-10 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(bi_wkv(w, u, k, v).double(), bi_wkv_reference(w, u, k, v),
                               rtol=0, atol=atol)
