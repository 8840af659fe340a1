"""The qint8 GEMM (kernels_pyx/gemm_q8.pyx, wb_gemm_q8.h) against an integer NumPy reference: the
int32 sums exact, the requantized uint8 outputs within 1 LSB (exact where no tie is near), the
float32 (dequantized) outputs to float32 rounding; both builds, odd shapes, strides, threads, and
every malformed argument a ValueError before any kernel runs."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from workbench.runtime import cpu

_ALL = [("baseline", cpu.kernel_module("gemm_q8")), ("avx512vnni", cpu.kernel_module("gemm_q8", "avx512vnni")),
        ("amxint8", cpu.kernel_module("gemm_q8", "amxint8"))]
_ALL = [(name, b) for name, b in _ALL if b is not None and (name != "amxint8" or b.available)]
BUILDS = [b for _, b in _ALL]
IDS = [name for name, _ in _ALL]


def test_the_vnni_and_amx_builds_are_here_where_the_cpu_has_them():
    assert BUILDS and not BUILDS[0].available
    if cpu.supports("avx512vnni"):
        assert "avx512vnni" in IDS and BUILDS[IDS.index("avx512vnni")].available
    if cpu.supports("amxint8"):   # present; available where Linux grants the tiles
        assert cpu.kernel_module("gemm_q8", "amxint8") is not None


def _case(rng, m, n, k, za=7):
    a = rng.integers(0, 256, (m, k), dtype=np.uint8)
    w = rng.integers(-128, 128, (n, k), dtype=np.int8)
    sums = a.astype(np.int64) @ w.astype(np.int64).T
    comp = (za * w.astype(np.int64).sum(axis=1)).astype(np.int32)
    return a, w, sums, comp


@pytest.mark.parametrize("mod", BUILDS, ids=IDS)
@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 30), n=st.integers(1, 70), k=st.integers(1, 77), threads=st.sampled_from([1, 2]),
       seed=st.integers(0, 2 ** 16))
def test_sums_are_exact(mod, m, n, k, threads, seed):
    rng = np.random.default_rng(seed)
    a, w, sums, comp = _case(rng, m, n, k)
    packed, wsum = mod.pack(w)
    np.testing.assert_array_equal(wsum, w.astype(np.int64).sum(axis=1))
    out = np.full((m, n), np.nan, np.float32)
    mod.gemm(a, packed, n, comp, np.ones(n, np.float32), np.zeros(n, np.float32), out, num_threads=threads)
    np.testing.assert_array_equal(out.astype(np.int64), sums - comp)   # |sums| < 2^24: exact in float32


@pytest.mark.parametrize("mod", BUILDS, ids=IDS)
@pytest.mark.parametrize("relu", [False, True])
def test_requantized_outputs_within_one_lsb(mod, relu, rng):
    m, n, k, zo = 37, 45, 150, 19
    a, w, sums, comp = _case(rng, m, n, k)
    mult = rng.uniform(1e-4, 2e-3, n).astype(np.float32)
    bias = rng.uniform(-30, 30, n).astype(np.float32)
    packed, _ = mod.pack(w)
    out = np.zeros((m, n), np.uint8)
    mod.gemm(a, packed, n, comp, mult, bias, out, zo=zo, relu=relu, num_threads=2)
    y = (sums - comp) * mult.astype(np.float64) + bias
    want = np.clip(np.rint(y) + zo, zo if relu else 0, 255)
    diff = np.abs(out.astype(np.int64) - want)
    assert diff.max() <= 1
    assert (diff == 0).mean() > 0.99
    assert (want == 255).any() and (want == (zo if relu else 0)).any()   # both clamps were exercised
    f = np.zeros((m, n), np.float32)
    mod.gemm(a, packed, n, comp, mult, bias, f, relu=relu, num_threads=2)
    ref = np.maximum(y, 0) if relu else y
    np.testing.assert_allclose(f, ref, rtol=2e-6, atol=2e-5)


def _erf(v):
    from math import erf
    return np.vectorize(erf)(v)


#: NumPy formulas of the epilogue's computed activations (epilogue.py's codes), p0 and p1 as passed.
COMPUTED = {3: lambda v, a, b: np.where(v < 0, a * v, v), 4: lambda v, a, b: np.clip(a * v + b, 0, 1),
            5: lambda v, a, b: v * np.clip(v / 6 + 0.5, 0, 1), 6: lambda v, a, b: 1 / (1 + np.exp(-v)),
            8: lambda v, a, b: np.tanh(v), 9: lambda v, a, b: v / (1 + np.exp(-v)),
            10: lambda v, a, b: 0.5 * v * (1 + _erf(v / np.sqrt(2))),
            11: lambda v, a, b: 0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v ** 3)))}


@pytest.mark.parametrize("mod", BUILDS, ids=IDS)
@pytest.mark.parametrize("code", sorted(COMPUTED))
def test_computed_activations_in_real_units(mod, code, rng):
    """An activation applied to the real values (the uint8 output's scale taken out and put back),
    after a residual: float32 outputs to float32 rounding, uint8 within 1 LSB."""
    m, n, k, zo, so, p0, p1 = 29, 37, 70, 100, 0.03, 0.2, 0.45
    a, w, sums, comp = _case(rng, m, n, k)
    mult = rng.uniform(2e-4, 1.2e-3, n).astype(np.float32)
    bias = rng.uniform(-2, 2, n).astype(np.float32)
    res = rng.standard_normal((m, n)).astype(np.float32)
    packed, _ = mod.pack(w)
    real = (sums - comp) * mult.astype(np.float64) + bias + res
    f = np.zeros((m, n), np.float32)
    mod.gemm(a, packed, n, comp, mult, bias, f, res=res, act=(code, p0, p1, 1.0), num_threads=2)
    want = COMPUTED[code](real, p0, p1)
    np.testing.assert_allclose(f, want, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(want).max()))
    q = np.zeros((m, n), np.uint8)   # the same sums in the output's units
    mod.gemm(a, packed, n, comp, mult / np.float32(so), bias / np.float32(so), q, zo=zo, res=res,
             rmult=1 / so, act=(code, p0, p1, so), num_threads=2)
    diff = np.abs(q.astype(np.int64) - np.clip(np.rint(want / so) + zo, 0, 255))
    assert diff.max() <= 1 and (diff == 0).mean() > 0.97
    with pytest.raises(ValueError, match="activation"):
        mod.gemm(a, packed, n, comp, mult, bias, f, act=(7, 0, 0, 1.0))   # PRelu: a slope per channel


@pytest.mark.parametrize("mod", BUILDS, ids=IDS)
def test_strided_rows_and_output(mod, rng):
    m, n, k = 13, 20, 33
    big = rng.integers(0, 256, (m, k + 11), dtype=np.uint8)
    a = big[:, 3:3 + k]
    w = rng.integers(-128, 128, (n, k), dtype=np.int8)
    packed, _ = mod.pack(w)
    out = np.zeros((m, n + 5), np.float32)
    mod.gemm(a, packed, n, np.zeros(n, np.int32), np.ones(n, np.float32), np.zeros(n, np.float32), out[:, :n])
    np.testing.assert_array_equal(out[:, :n].astype(np.int64), a.astype(np.int64) @ w.astype(np.int64).T)
    assert not out[:, n:].any()


def test_the_builds_agree_bit_for_bit(rng):
    if len(BUILDS) < 2:
        pytest.skip("no VNNI build on this CPU")
    a, w, _, comp = _case(rng, 50, 70, 99)
    mult, bias = rng.uniform(1e-4, 1e-3, 70).astype(np.float32), rng.uniform(-5, 5, 70).astype(np.float32)
    outs = []
    for mod in BUILDS:
        packed, _ = mod.pack(w)
        o = np.zeros((50, 70), np.uint8)
        mod.gemm(a, packed, 70, comp, mult, bias, o, zo=3)
        outs.append(o)
    for o in outs[1:]:
        np.testing.assert_array_equal(outs[0], o)


def test_bad_arguments_are_value_errors():
    mod = BUILDS[-1]
    w = np.ones((4, 8), np.int8)
    packed, _ = mod.pack(w)
    a, out = np.ones((2, 8), np.uint8), np.zeros((2, 4), np.float32)
    ok = dict(comp=np.zeros(4, np.int32), mult=np.ones(4, np.float32), bias=np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="weights must be int8"):
        mod.pack(w.astype(np.int16))
    with pytest.raises(ValueError, match="depth .* could overflow"):
        mod.pack(np.zeros((1, mod.MAX_DEPTH + 1), np.int8))
    with pytest.raises(ValueError, match="a must be uint8"):
        mod.gemm(a.astype(np.int8), packed, 4, out=out, **ok)
    with pytest.raises(ValueError, match="packed weights for \\(4, 80\\)"):   # more groups than packed
        mod.gemm(np.ones((2, 80), np.uint8), packed, 4, out=out, **ok)
    with pytest.raises(ValueError, match="mult must be float32 \\(4,\\)"):
        mod.gemm(a, packed, 4, out=out, **{**ok, "mult": np.ones(3, np.float32)})
    with pytest.raises(ValueError, match="out must be float32 or uint8 \\(2, 4\\)"):
        mod.gemm(a, packed, 4, out=np.zeros((2, 4), np.int32), **ok)
    with pytest.raises(ValueError, match="zero point must lie"):
        mod.gemm(a, packed, 4, out=np.zeros((2, 4), np.uint8), zo=300, **ok)


def _dw_reference(x, w, zx, kernel, strides, dilations, pads):
    """Brute force: int64 sums of (x - zx) * w over each window, taps in the padding skipped."""
    n, h, wd, c = x.shape
    (kh, kw), (sh, sw), (dh, dw), (pt, pl, pb, pr) = kernel, strides, dilations, pads
    oh = (h + pt + pb - (kh - 1) * dh - 1) // sh + 1
    ow = (wd + pl + pr - (kw - 1) * dw - 1) // sw + 1
    out = np.zeros((n, oh, ow, c), np.int64)
    xs = x.astype(np.int64) - zx
    for i in range(kh):
        for j in range(kw):
            for y in range(oh):
                iy = y * sh - pt + i * dh
                if not 0 <= iy < h:
                    continue
                for z in range(ow):
                    iz = z * sw - pl + j * dw
                    if 0 <= iz < wd:
                        out[:, y, z, :] += xs[:, iy, iz, :] * w[:, 0, i, j].astype(np.int64)
    return out


def _dw(mod, x, w, zx):
    """pack_depthwise's weights, with the zero point's compensation and padding row."""
    wp, sums = mod.pack_depthwise(w)
    np.testing.assert_array_equal(sums, w.reshape(w.shape[0], -1).astype(np.int64).sum(axis=1))
    return wp, (sums * np.int32(zx)).astype(np.int32), np.full(x.shape[3], zx, np.uint8)


@pytest.mark.parametrize("mod", BUILDS, ids=IDS)
@settings(max_examples=25, deadline=None)
@given(c=st.sampled_from([1, 5, 16, 37, 64, 100, 130]), k=st.sampled_from([(3, 3), (5, 5), (1, 7), (2, 2)]),
       s=st.sampled_from([1, 2]), d=st.sampled_from([1, 2]), pads=st.tuples(*[st.integers(0, 2)] * 4),
       threads=st.sampled_from([1, 2]), seed=st.integers(0, 2 ** 16))
def test_depthwise_sums_are_exact(mod, c, k, s, d, pads, threads, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (2, 9, 11, c), dtype=np.uint8)
    w = rng.integers(-128, 128, (c, 1, *k), dtype=np.int8)
    zx = int(rng.integers(0, 256))
    wp, comp, zrow = _dw(mod, x, w, zx)
    ones, zeros = np.ones(c, np.float32), np.zeros(c, np.float32)
    if min(9 + pads[0] + pads[2] - (k[0] - 1) * d, 11 + pads[1] + pads[3] - (k[1] - 1) * d) < 1:
        with pytest.raises(ValueError, match="is empty"):
            mod.depthwise(x, wp, k, (s, s), (d, d), pads, comp, ones, zeros, np.zeros((2, 1, 1, c), np.float32), zrow)
        return
    want = _dw_reference(x, w, zx, k, (s, s), (d, d), pads)
    out = np.full(want.shape, np.nan, np.float32)
    mod.depthwise(x, wp, k, (s, s), (d, d), pads, comp, ones, zeros, out, zrow, num_threads=threads)
    np.testing.assert_array_equal(out.astype(np.int64), want)


@pytest.mark.parametrize("mod", BUILDS, ids=IDS)
def test_depthwise_requantizes_within_one_lsb(mod, rng):
    c = 40
    x = rng.integers(0, 256, (1, 14, 14, c), dtype=np.uint8)
    w = rng.integers(-128, 128, (c, 1, 3, 3), dtype=np.int8)
    mult, bias = rng.uniform(1e-3, 8e-3, c).astype(np.float32), rng.uniform(-20, 20, c).astype(np.float32)
    want = _dw_reference(x, w, 100, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)) * mult.astype(np.float64) + bias
    out = np.zeros((1, 14, 14, c), np.uint8)
    wp, comp, zrow = _dw(mod, x, w, 100)
    geo = ((3, 3), (1, 1), (1, 1), (1, 1, 1, 1))
    mod.depthwise(x, wp, *geo, comp, mult, bias, out, zrow, zo=7, relu=True, num_threads=2)
    q = np.clip(np.rint(want) + 7, 7, 255)
    diff = np.abs(out.astype(np.int64) - q)
    assert diff.max() <= 1 and (diff == 0).mean() > 0.99
    with pytest.raises(ValueError, match="packed weights must be int8 \\(1, 5, 4, 64\\)"):
        mod.depthwise(x, np.zeros((5, 40), np.int32), *geo, comp, mult, bias, out, zrow)
    with pytest.raises(ValueError, match="x must be a C-contiguous uint8"):
        mod.depthwise(x.astype(np.int8), wp, *geo, comp, mult, bias, out, zrow)
    with pytest.raises(ValueError, match="out must be"):
        mod.depthwise(x, wp, *geo, comp, mult, bias, np.zeros((1, 12, 12, c), np.uint8), zrow)
    with pytest.raises(ValueError, match="zrow must be"):
        mod.depthwise(x, wp, *geo, comp, mult, bias, out, zrow[:10])
    with pytest.raises(ValueError, match="comp must be int32"):
        mod.depthwise(x, wp, *geo, comp[:3], mult, bias, out, zrow)
