"""The bfloat16 GEMM (gemm_bf16.pyx) against NumPy: the same bfloat16 inputs and weights,
products summed in float64, the epilogue in float32, then rounded to bfloat16 by ml_dtypes.
Both builds: the scalar baseline everywhere, the VDPBF16PS one where the CPU has AVX512-BF16."""
import importlib

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from workbench.runtime import cpu

BF16 = np.dtype(ml_dtypes.bfloat16)
BUILDS = ["gemm_bf16"] + (["gemm_bf16_avx512bf16"] if cpu.kernel_module("gemm_bf16", "avx512bf16") else [])
#: The AMX build, where the CPU has it: gemm and conv_im2col on tiles (its conv_implicit is the VDPBF16PS one).
AMX = ["gemm_bf16_amx"] if cpu.kernel_module("gemm_bf16", "amx") else []


def _module(name):
    return importlib.import_module(f"workbench._kernels.{name}")


def _act(x, code, p0, p1):
    if code == 1:
        return np.maximum(x, 0)
    if code == 2:
        return np.clip(x, p0, p1)
    if code == 3:
        return np.where(x < 0, x * p0, x)
    if code == 4:
        return np.clip(x * p0 + p1, 0, 1)
    if code == 5:
        return x * np.clip(x / 6 + 0.5, 0, 1)
    if code == 6:
        return 1 / (1 + np.exp(-x))
    if code == 9:
        return x / (1 + np.exp(-x))
    if code == 10:
        from scipy.special import erf
        return x * 0.5 * (1 + erf(x / np.sqrt(2)))
    if code == 11:
        return x * 0.5 * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    return x


#: Relative error of sigmoid, SiLU and GELU (codes 6, 9, 10, 11) in the bfloat16 kernels' epilogues
#: (``wb_bf16.h``'s wbb_act: 2^x to 1.0e-4 by a cubic, 2^-14 reciprocal estimates, erfc to 1.5e-7).
LOWP_ACT = 3e-4


def _reference(a, w, bias, res, code, p0, p1, post, res_post):
    """float32 result and the bound of its summation error (|a| @ |w| in float32 ulps)."""
    af, wf = a.astype(np.float64), w.astype(BF16).astype(np.float64)
    acc = (af.reshape(-1, af.shape[-1]) @ wf.T).reshape(a.shape[:-1] + (w.shape[0],))
    bound = (np.abs(af.reshape(-1, af.shape[-1])) @ np.abs(wf.T)).reshape(acc.shape) * 2e-6 + 1e-6
    r = acc.astype(np.float32)
    if bias is not None:
        r = r + bias
    if res is not None and not res_post:
        r = r + res.astype(np.float32)
    r = _act(r, code, np.float32(p0), np.float32(p1))
    if post is not None:
        r = r * post[0] + post[1]
        bound = bound * np.abs(post[0]).max()
    if res is not None and res_post:
        r = r + res.astype(np.float32)
    return r, bound


def test_native_build_where_the_cpu_has_it():
    assert _module("gemm_bf16").available is False
    if cpu.supports("avx512bf16"):
        assert "gemm_bf16_avx512bf16" in BUILDS and _module("gemm_bf16_avx512bf16").available
    if cpu.supports("amx"):
        assert AMX and _module("gemm_bf16_amx").available and _module("gemm_bf16_amx").amx
    for build in BUILDS:
        assert not _module(build).amx


@settings(max_examples=60, deadline=None, derandomize=True)
@given(m=st.integers(1, 60), k=st.integers(1, 80), n=st.integers(1, 70), lead=st.sampled_from([(), (1,), (2, 1)]),
       code=st.sampled_from([0, 1, 2, 3, 4, 5, 6, 9, 10, 11]), bias=st.booleans(),
       res=st.sampled_from([None, "pre", "post"]), post=st.booleans(), f32=st.booleans(), in32=st.booleans(),
       build=st.sampled_from(BUILDS + AMX), threads=st.sampled_from([1, 2]))
def test_matches_numpy(m, k, n, lead, code, bias, res, post, f32, in32, build, threads):
    """``in32``: the input arrives in float32 (rounded to bfloat16 as it is gathered), and so does
    the residual.  Codes 6 and up (sigmoid, SiLU, GELU: the native build's staged epilogue) have
    slopes below 1.13, so the sums' bound holds through them."""
    mod = _module(build)
    if code >= 6 and not mod.handles(code):
        return
    post = post and code <= 5   # the kernels take a post-activation affine after codes 0-5 only
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    a32 = rng.standard_normal(lead + (m, k)).astype(np.float32)
    a = a32.astype(BF16)
    w = rng.standard_normal((n, k)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32) if bias else None
    r = rng.standard_normal(lead + (m, n)).astype(np.float32 if in32 else BF16) if res else None
    pa = (rng.uniform(0.5, 2, n).astype(np.float32), rng.standard_normal(n).astype(np.float32)) if post else None
    p0, p1 = {2: (-0.5, 1.5), 3: (0.1, 0), 4: (0.2, 0.5)}.get(code, (0, 0))
    out = np.full(lead + (m, n), np.nan, np.float32 if f32 else BF16)
    wp = mod.pack(w)
    assert wp.dtype == np.uint16 and wp.size == mod.packed_words(k, n)
    assert mod.gemm(a32 if in32 else a, wp, out, b, r, code, p0, p1, pa, res == "post", threads) is out
    ref, bound = _reference(a, w, b, r, code, p0, p1, pa, res == "post")
    got = out.astype(np.float32)
    if not f32:   # one rounding to bfloat16 on top: half an ulp of 8 bits
        bound = bound + np.abs(ref) * 2.0 ** -8
    if code in (6, 9, 10, 11):
        bound = bound + np.abs(ref) * LOWP_ACT
    assert np.all(np.abs(got - ref) <= bound + 1e-5), np.abs(got - ref).max()


@pytest.mark.skipif(len(BUILDS) < 2, reason="this CPU lacks AVX512-BF16: the low-precision forms are the native build's")
@pytest.mark.parametrize("code", [6, 9, 10, 11])
def test_low_precision_activations_on_a_dense_grid(code):
    """Sigmoid, SiLU and both GELUs of the native epilogue (a 1x1 product by 1, float32 out) on
    every bfloat16 value in [-20, 20] and the specials, against float64: within LOWP_ACT relative
    where |y| > 1e-3, 1e-6 absolute below; infinities and NaN as the float32 forms give them."""
    mod = _module("gemm_bf16_avx512bf16")
    x = np.unique(np.linspace(-20, 20, 200001).astype(BF16))
    x = np.concatenate([x, np.array([np.inf, -np.inf, np.nan], BF16)])
    out = np.empty((x.size, 1), np.float32)
    mod.gemm(x.reshape(-1, 1), mod.pack(np.ones((1, 1), np.float32)), out, act=code, num_threads=1)
    got = out[:, 0].astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        want = _act(x.astype(np.float64), code, 0, 0)
    fin = np.isfinite(x.astype(np.float32))
    big = fin & (np.abs(want) > 1e-3)
    assert np.max(np.abs(got[big] - want[big]) / np.abs(want[big])) <= LOWP_ACT
    assert np.max(np.abs(got[fin & ~big] - want[fin & ~big])) <= 1e-6
    special = {6: [1.0, 0.0, np.nan]}.get(code, [np.inf, np.nan, np.nan])   # f(inf), f(-inf), f(NaN)
    np.testing.assert_array_equal(got[~fin], special)


@pytest.mark.parametrize("build", BUILDS + AMX)
def test_output_rounds_to_nearest_even_like_ml_dtypes(build):
    """With k = 1 and a weight of 1 the product is exact, so the stored word is exactly
    ml_dtypes' rounding of the float32 sum a + bias."""
    mod = _module(build)
    rng = np.random.default_rng(1)
    a = rng.standard_normal((64, 1)).astype(BF16)
    bias = (rng.standard_normal(32) * 1e-3).astype(np.float32)
    out = np.empty((64, 32), BF16)
    mod.gemm(a, mod.pack(np.ones((32, 1), np.float32)), out, bias, None, 0, 0, 0, None, False, 2)
    ref = (a.astype(np.float32) + bias).astype(BF16)
    np.testing.assert_array_equal(out.view(np.uint16), ref.view(np.uint16))


@pytest.mark.parametrize("build", BUILDS + AMX)
def test_nan_and_inf_propagate(build):
    mod = _module(build)
    a = np.ones((13, 6), BF16)
    a[2, 3], a[5, 0] = np.nan, np.inf
    out = np.empty((13, 5), np.float32)
    mod.gemm(a, mod.pack(np.ones((5, 6), np.float32)), out, None, None, 1, 0, 0, None, False, 2)
    assert np.isnan(out[2]).all() and np.isposinf(out[5]).all()
    assert np.all(out[[0, 1, 3, 4, 6]] == 6)


@pytest.mark.parametrize("build", BUILDS + AMX)
def test_bad_arguments_are_refused(build):
    mod = _module(build)
    a, w = np.ones((4, 8), BF16), mod.pack(np.ones((3, 8), np.float32))
    with pytest.raises(TypeError, match="input must be bfloat16"):
        mod.gemm(np.ones((4, 8), np.float64), w, np.empty((4, 3), BF16))
    with pytest.raises(ValueError, match="packed weights hold"):
        mod.gemm(a, mod.pack(np.ones((3, 6), np.float32)), np.empty((4, 3), BF16))
    with pytest.raises(ValueError, match="share all but the last axis"):
        mod.gemm(a, w, np.empty((5, 3), BF16))
    with pytest.raises(ValueError, match="bias must have shape"):
        mod.gemm(a, w, np.empty((4, 3), BF16), np.ones(4, np.float32))
    with pytest.raises(ValueError, match="residual"):
        mod.gemm(a, w, np.empty((4, 3), BF16), None, np.ones((4, 4), BF16))
    with pytest.raises(TypeError, match="output must be a bfloat16 or float32"):
        mod.gemm(a, w, np.empty((4, 3), np.float64))
    with pytest.raises(ValueError, match="activation code 7"):
        mod.gemm(a, w, np.empty((4, 3), BF16), None, None, 7)
    with pytest.raises(ValueError, match="overlaps"):
        buf = np.ones((4, 8), BF16)
        mod.gemm(buf, mod.pack(np.ones((8, 8), np.float32)), buf)
    with pytest.raises(ValueError, match="must be 2-D"):
        mod.pack(np.ones(3, np.float32))


def _conv_reference(x, w, strides, pads, dilations=(1, 1)):
    """NHWC convolution in float64: x (N, H, W, C), w (M, C/g, KH, KW) with groups = C / (C/g)."""
    n, h, wd, c = x.shape
    m, cg, kh, kw = w.shape
    groups = c // cg
    (sh, sw), (dh, dw), (pt, pl, pb, pr) = strides, dilations, pads
    xp = np.pad(x.astype(np.float64), ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    oh, ow = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1, (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, oh, ow, m))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, i * dh: i * dh + sh * (oh - 1) + 1: sh, j * dw: j * dw + sw * (ow - 1) + 1: sw, :]
            for g in range(groups):
                mg = m // groups
                out[..., g * mg:(g + 1) * mg] += patch[..., g * cg:(g + 1) * cg] @ w[g * mg:(g + 1) * mg, :, i, j].T
    return out


@settings(max_examples=40, deadline=None, derandomize=True)
@given(n=st.integers(1, 2), h=st.integers(1, 13), w=st.integers(1, 17), c=st.integers(1, 70),
       k=st.sampled_from([1, 3, 5, 7]), s=st.sampled_from([1, 2, 3]), pad=st.integers(0, 3),
       code=st.sampled_from([0, 1, 2, 5, 6]), bias=st.booleans(), f32=st.booleans(), build=st.sampled_from(BUILDS),
       threads=st.sampled_from([1, 2, 3]), wide=st.booleans())
def test_depthwise_matches_numpy(n, h, w, c, k, s, pad, code, bias, f32, build, threads, wide):
    """Both forms (wide: the rows widened once into scratch, the float32 register kernel; else the
    sliding form) against a float64 reference; sigmoid (6) is applied after the register kernel's
    own activations."""
    mod = _module(build.replace("gemm_bf16", "depthwise_bf16"))   # the same build of the depthwise module
    if h + 2 * pad < k or w + 2 * pad < k or (code == 6 and build == "gemm_bf16"):
        return
    wide = wide and build != "gemm_bf16"   # the wide form needs the native build
    rng = np.random.default_rng(h * 100 + w * 10 + c)
    x = rng.standard_normal((n, h, w, c)).astype(BF16)
    wt = rng.standard_normal((c, 1, k, k)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32) if bias else None
    wp, bp = mod.pack_depthwise(np.ascontiguousarray(wt[:, 0].transpose(1, 2, 0)), b, wide)
    oh, ow = (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
    out = np.full((n, oh, ow, c), np.nan, np.float32 if f32 else BF16)
    mod.conv_depthwise(x, wp, bp, out, (k, k), (s, s), (1, 1), (pad,) * 4, code, -0.5, 1.5, threads, wide)
    ref = _conv_reference(x.astype(np.float32), wt, (s, s), (pad,) * 4) + (0 if b is None else b)
    ref = _act(ref, code, -0.5, 1.5)
    bound = 1e-5 * (np.abs(x.astype(np.float64)).max() * np.abs(wt).sum(axis=(1, 2, 3)).max() + 1)
    if not f32:
        bound = bound + np.abs(ref) * 2.0 ** -8
    if code in (6, 9, 10, 11):
        bound = bound + np.abs(ref) * LOWP_ACT
    assert np.all(np.abs(out.astype(np.float64) - ref) <= bound), np.abs(out.astype(np.float64) - ref).max()


@settings(max_examples=30, deadline=None, derandomize=True)
@given(n=st.integers(1, 2), h=st.integers(1, 9), w=st.integers(1, 23), k=st.sampled_from([3, 5, 7]),
       sh=st.sampled_from([1, 2]), pads=st.tuples(*[st.integers(0, 3)] * 4), code=st.sampled_from([0, 2, 5, 6]),
       f32=st.booleans(), build=st.sampled_from(BUILDS), threads=st.sampled_from([1, 2, 3]))
def test_depthwise_of_16_channels_two_pixels_a_vector_matches_numpy(n, h, w, k, sh, pads, code, f32, build,
                                                                   threads):
    """Sixteen channels at stride 1 across (wb_dw_pairs_bf16.h): pairs of pixels in one vector,
    rows of odd length (the last pair half stored), taps past either end of the row, NaN and
    infinity kept to their windows."""
    mod = _module(build.replace("gemm_bf16", "depthwise_bf16"))
    (pt, pl, pb, pr), c = pads, 16
    if h + pt + pb < k or w + pl + pr < k or (code == 6 and build == "gemm_bf16"):
        return
    rng = np.random.default_rng(h * 100 + w * 10 + k)
    x = rng.standard_normal((n, h, w, c)).astype(BF16)
    x[0, h // 2, w - 1, 3], x[n - 1, 0, 0, 12] = np.nan, np.inf
    wt = rng.standard_normal((c, 1, k, k)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    wp, bp = mod.pack_depthwise(np.ascontiguousarray(wt[:, 0].transpose(1, 2, 0)), b)
    oh, ow = (h + pt + pb - k) // sh + 1, (w + pl + pr - k) + 1
    out = np.full((n, oh, ow, c), -7, np.float32 if f32 else BF16)
    mod.conv_depthwise(x, wp, bp, out, (k, k), (sh, 1), (1, 1), pads, code, -0.5, 1.5, threads)
    ref = _act(_conv_reference(x.astype(np.float32), wt, (sh, 1), pads) + b, code, -0.5, 1.5)
    got = out.astype(np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    finite = np.isfinite(ref)
    assert np.array_equal(got[~finite & ~np.isnan(ref)], ref[~finite & ~np.isnan(ref)])
    bound = 1e-5 * (np.abs(x.astype(np.float64)[np.isfinite(x.astype(np.float64))]).max() * np.abs(wt).sum(axis=(1, 2, 3)).max() + 1)
    bound = bound + np.abs(ref[finite]) * ((0 if f32 else 2.0 ** -8) + (LOWP_ACT if code == 6 else 0))
    assert np.all(np.abs(got[finite] - ref[finite]) <= bound), np.abs(got[finite] - ref[finite]).max()


@settings(max_examples=40, deadline=None, derandomize=True)
@given(n=st.integers(1, 2), h=st.integers(1, 13), w=st.integers(1, 21), c=st.integers(1, 70),
       k=st.sampled_from([3, 5, 7]), sh=st.sampled_from([1, 2, 3]), sw=st.sampled_from([1, 2]),
       pads=st.tuples(*[st.integers(0, 3)] * 4), code=st.sampled_from([0, 1, 2, 5, 6]), bias=st.booleans(),
       f32=st.booleans(), threads=st.sampled_from([1, 2, 3]))
@pytest.mark.skipif(len(BUILDS) < 2, reason="this CPU lacks AVX512-BF16: the dot form is the native build's only")
def test_depthwise_dot_form_matches_numpy(n, h, w, c, k, sh, sw, pads, code, bias, f32, threads):
    """The VDPBF16PS form (``wb_dw_dot_bf16.h``) against a float64 reference on the input and the
    weights rounded to bfloat16: their products are exact, so the difference is the float32 sums'
    rounding: at most (terms - 1) * 2^-24 of the sum of |products| for the k * k + 1 terms, times
    the activation's slope (hard swish: up to 1.5), within 2^-18 of it; a bfloat16 output adds
    its one rounding."""
    mod = _module("depthwise_bf16_avx512bf16")
    pt, pl, pb, pr = pads
    if h + pt + pb < k or w + pl + pr < k:
        return
    rng = np.random.default_rng(h * 100 + w * 10 + c + k)
    x = rng.standard_normal((n, h, w, c)).astype(BF16)
    x[0, 0, 0, 0] = 0.0   # a zero column still adds the bias only
    wt = rng.standard_normal((c, 1, k, k)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32) if bias else None
    wp, bp = mod.pack_depthwise_dot(np.ascontiguousarray(wt[:, 0].transpose(1, 2, 0)), b)
    oh, ow = (h + pt + pb - k) // sh + 1, (w + pl + pr - k) // sw + 1
    out = np.full((n, oh, ow, c), np.nan, np.float32 if f32 else BF16)
    mod.conv_depthwise(x, wp, bp, out, (k, k), (sh, sw), (1, 1), pads, code, -0.5, 1.5, threads, dot=True)
    wr = wt.astype(BF16).astype(np.float32)
    ref = _act(_conv_reference(x.astype(np.float32), wr, (sh, sw), pads) + (0 if b is None else b), code, -0.5, 1.5)
    bound = 2.0 ** -18 * (_conv_reference(np.abs(x.astype(np.float32)), np.abs(wr), (sh, sw), pads)
                          + (0 if b is None else np.abs(b))) + 1e-30
    if not f32:
        bound = bound + np.abs(ref) * 2.0 ** -8
    if code in (6, 9, 10, 11):
        bound = bound + np.abs(ref) * LOWP_ACT
    assert np.all(np.abs(out.astype(np.float64) - ref) <= bound), np.abs(out.astype(np.float64) - ref).max()


@settings(max_examples=25, deadline=None, derandomize=True)
@given(h=st.integers(1, 12), c=st.integers(1, 40), m=st.integers(1, 40), k=st.sampled_from([1, 2, 3, 5]),
       s=st.sampled_from([1, 2]), pad=st.integers(0, 2), d=st.sampled_from([1, 2]), build=st.sampled_from(BUILDS + AMX),
       threads=st.sampled_from([1, 2]))
def test_im2col_convolution_matches_numpy(h, c, m, k, s, pad, d, build, threads):
    mod = _module(build)
    if h + 2 * pad < d * (k - 1) + 1:
        return
    rng = np.random.default_rng(h * 1000 + c * 10 + m)
    x = rng.standard_normal((1, h, h + 1, c)).astype(BF16)
    wt = rng.standard_normal((m, c, k, k)).astype(np.float32)
    wp = mod.pack(np.ascontiguousarray(wt.transpose(0, 2, 3, 1).reshape(m, -1)))
    ref = _conv_reference(x.astype(np.float32), wt.astype(BF16).astype(np.float32), (s, s), (pad,) * 4, (d, d))
    out = np.empty(ref.shape, np.float32)
    # a float32 image whose values round to x: gathered and rounded, the same product
    x32 = x.astype(np.float32) + (rng.uniform(-0.4, 0.4, x.shape) * np.abs(x.astype(np.float32)) * 2.0 ** -8).astype(np.float32)
    mod.conv_im2col(x32 if (h + c) % 2 else x, wp, out, (k, k), (s, s), (d, d), (pad,) * 4, num_threads=threads)
    bound = 2e-6 * _conv_reference(np.abs(x.astype(np.float32)), np.abs(wt.astype(BF16).astype(np.float32)),
                                   (s, s), (pad,) * 4, (d, d)) + 1e-6
    assert np.all(np.abs(out - ref) <= bound)


@pytest.mark.parametrize("build", BUILDS + AMX)
def test_a_bound_call_computes_what_a_direct_call_does(build):
    """``bind=True`` checks once and returns a Call; calling it (at any thread count, the
    schedule redone when it changes) gives the direct call's result."""
    mod = _module(build)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 9, 11, 20)).astype(np.float32)
    wp = mod.pack(rng.standard_normal((33, 9 * 20)).astype(np.float32))
    want, got = np.empty((1, 9, 11, 33), BF16), np.empty((1, 9, 11, 33), BF16)
    mod.conv_im2col(x, wp, want, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), None, None, 1, num_threads=2)
    call = mod.conv_im2col(x, wp, got, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), None, None, 1, num_threads=1, bind=True)
    assert isinstance(call, mod.Call) and not np.array_equal(got.view(np.uint16), want.view(np.uint16))
    for threads in (1, 2, 1):
        got[...] = 0
        call(threads)
        np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))
    a = rng.standard_normal((50, 20)).astype(BF16)
    w2 = mod.pack(rng.standard_normal((7, 20)).astype(np.float32))
    want2, got2 = np.empty((50, 7), np.float32), np.empty((50, 7), np.float32)
    mod.gemm(a, w2, want2, num_threads=2)
    mod.gemm(a, w2, got2, bind=True)(2)
    np.testing.assert_array_equal(got2, want2)
    with pytest.raises(ValueError, match="num_threads"):
        call(0)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(n=st.integers(1, 2), h=st.integers(1, 14), w=st.integers(1, 15), c=st.integers(1, 24).map(lambda v: 2 * v),
       m=st.integers(1, 70), k=st.sampled_from([1, 2, 3, 5]), s=st.sampled_from([1, 2]), pad=st.integers(0, 2),
       d=st.sampled_from([1, 2]), f32_in=st.booleans(), f32_out=st.booleans(), epilogue=st.booleans(),
       build=st.sampled_from(BUILDS), threads=st.sampled_from([1, 2, 3]))
def test_implicit_convolution_is_the_im2col_one_bit_for_bit(n, h, w, c, m, k, s, pad, d, f32_in, f32_out, epilogue,
                                                           build, threads):
    """The same packed weights and the same sums in the same order: the implicit GEMM reads the
    taps where they lie (in a zero-bordered copy of the image) and gives im2col's outputs exactly,
    bias, residual and activation included, from a bfloat16 or a float32 image."""
    mod = _module(build)
    if h + 2 * pad < d * (k - 1) + 1 or w + 2 * pad < d * (k - 1) + 1:
        return
    rng = np.random.default_rng(h * 1000 + w * 100 + c * 10 + m)
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    x = x if f32_in else x.astype(BF16)
    wt = rng.standard_normal((m, c, k, k)).astype(np.float32)
    wp = mod.pack(np.ascontiguousarray(wt.transpose(0, 2, 3, 1).reshape(m, -1)))
    oh, ow = (h + 2 * pad - d * (k - 1) - 1) // s + 1, (w + 2 * pad - d * (k - 1) - 1) // s + 1
    dtype = np.float32 if f32_out else BF16
    extra = {}
    if epilogue:
        extra = dict(bias=rng.standard_normal(m).astype(np.float32),
                     residual=rng.standard_normal((n, oh, ow, m)).astype(dtype), act=2, p0=-0.5, p1=1.5)
    geo = ((k, k), (s, s), (d, d), (pad,) * 4)
    want, got = np.empty((n, oh, ow, m), dtype), np.full((n, oh, ow, m), np.nan, dtype)
    mod.conv_im2col(x, wp, want, *geo, num_threads=threads, **extra)
    mod.conv_implicit(x, wp, got, *geo, num_threads=threads, **extra)
    np.testing.assert_array_equal(got.astype(np.float32), want.astype(np.float32))
    bound = mod.conv_implicit(x, wp, got, *geo, num_threads=threads, bind=True, **extra)
    got[...] = 0
    bound(threads)
    np.testing.assert_array_equal(got.astype(np.float32), want.astype(np.float32))


@pytest.mark.skipif(not AMX, reason="this CPU (or kernel) lacks AMX-BF16")
@settings(max_examples=40, deadline=None, derandomize=True)
@given(n=st.integers(1, 2), h=st.integers(1, 9), w=st.integers(1, 40), c=st.sampled_from([2, 4, 12, 24, 40, 48, 100]),
       m=st.integers(1, 70), k=st.sampled_from([1, 2, 3, 5]), s=st.sampled_from([1, 2, 3]),
       pads=st.tuples(*[st.integers(0, 2)] * 4), f32_in=st.booleans(), threads=st.sampled_from([1, 2, 3]))
def test_amx_runs_of_kernel_rows_match_numpy(n, h, w, c, m, k, s, pads, f32_in, threads):
    """Channel counts that are not a multiple of 32: each kernel row's taps read as one run,
    a bfloat16 image in place (border pixels' tiles copied, kernel rows in the padding skipped),
    a float32 one from its bordered copy; rows up to 40 pixels, so tiles end inside rows."""
    mod = _module(AMX[0])
    if h + pads[0] + pads[2] < k or w + pads[1] + pads[3] < k:
        return
    assert mod.reads_runs(c, k, 1) == (k * c <= 1024)
    rng = np.random.default_rng(h * 1000 + w * 100 + c * 10 + m)
    x = rng.standard_normal((n, h, w, c)).astype(BF16)
    wt = rng.standard_normal((m, c, k, k)).astype(np.float32)
    wp = mod.pack(np.ascontiguousarray(wt.transpose(0, 2, 3, 1).reshape(m, -1)))
    geo = ((k, k), (s, s), (1, 1), pads)
    ref = _conv_reference(x.astype(np.float32), wt.astype(BF16).astype(np.float32), (s, s), pads)
    bound = 2e-6 * _conv_reference(np.abs(x.astype(np.float32)), np.abs(wt.astype(BF16).astype(np.float32)),
                                   (s, s), pads) + 1e-6
    out = np.full(ref.shape, np.nan, np.float32)
    scratch = np.empty(mod.implicit_scratch_bytes((n, h, w, c), pads, f32_in, (s, s), (k, k)) + 64, np.uint8)
    mod.conv_implicit(x.astype(np.float32) if f32_in else x, wp, out, *geo, num_threads=threads, scratch=scratch)
    assert np.all(np.abs(out - ref) <= bound), np.abs(out - ref).max()


def test_packed_weights_start_on_a_cache_line():
    """AMX tile rows and AVX-512 loads of the panels each take one line, not two."""
    for build in BUILDS + AMX:
        for n, k in ((3, 5), (70, 300), (512, 4608)):
            assert _module(build).pack(np.ones((n, k), np.float32)).ctypes.data % 64 == 0


def test_implicit_convolution_checks_its_arguments():
    mod = _module(BUILDS[-1])
    wp = mod.pack(np.ones((4, 27), np.float32))
    with pytest.raises(ValueError, match="even channel count"):
        mod.conv_implicit(np.ones((1, 5, 5, 3), BF16), wp, np.empty((1, 3, 3, 4), BF16), (3, 3), (1, 1), (1, 1),
                          (0,) * 4)
    with pytest.raises(ValueError, match="packed weights hold"):
        mod.conv_implicit(np.ones((1, 5, 5, 4), BF16), wp, np.empty((1, 3, 3, 4), BF16), (3, 3), (1, 1), (1, 1),
                          (0,) * 4)
    with pytest.raises(ValueError, match="gives \\(N, OH, OW\\)"):
        mod.conv_implicit(np.ones((1, 5, 5, 4), BF16), mod.pack(np.ones((4, 36), np.float32)),
                          np.empty((1, 5, 5, 4), BF16), (3, 3), (1, 1), (1, 1), (0,) * 4)


@pytest.mark.parametrize("build", BUILDS + AMX)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_weights_too_large_for_l2_are_shared_out_by_panels(build, threads):
    """A deep layer (1.2 MB of packed weights, 25 pixels): every job takes all the rows and a
    share of the panels, so each panel is read from memory once; the outputs are the im2col
    convolution's bit for bit and within the summation bound of NumPy's."""
    mod = _module(build)
    rng = np.random.default_rng(31)
    c, m = 128, 512
    x = rng.standard_normal((1, 5, 5, c)).astype(BF16)
    wt = rng.standard_normal((m, 3, 3, c)).astype(np.float32)
    wp = mod.pack(wt.reshape(m, -1))
    geo = ((3, 3), (1, 1), (1, 1), (1, 1, 1, 1))
    want, got = np.empty((1, 5, 5, m), np.float32), np.full((1, 5, 5, m), np.nan, np.float32)
    mod.conv_im2col(x, wp, want, *geo, num_threads=threads)
    call = mod.conv_implicit(x, wp, got, *geo, num_threads=threads, bind=True)
    call(threads)
    np.testing.assert_array_equal(got, want)
    if threads > 1:
        assert call.jobs[0] == 1 and call.jobs[1] >= threads, call.jobs
    xp = np.pad(x.astype(np.float32), ((0, 0), (1, 1), (1, 1), (0, 0)))
    cols = np.stack([xp[0, i:i + 5, j:j + 5] for i in range(3) for j in range(3)], 2).reshape(25, -1)
    ref, bound = _reference(cols.astype(BF16), wt.reshape(m, -1), None, None, 0, 0, 0, None, False)
    assert np.all(np.abs(got.reshape(25, m) - ref) <= bound)
    a = rng.standard_normal((196, 512)).astype(BF16)
    w = rng.standard_normal((2048, 512)).astype(np.float32)
    out = np.empty((196, 2048), np.float32)
    call = mod.gemm(a, mod.pack(w), out, bind=True)
    call(threads)
    ref, bound = _reference(a, w, None, None, 0, 0, 0, None, False)
    assert np.all(np.abs(out - ref) <= bound)
    if threads > 1:
        assert call.jobs[0] < 196 // 32 and call.jobs[0] * call.jobs[1] >= 2 * threads, call.jobs
