"""The bfloat16 Winograd kernels (winograd_bf16.pyx) against a float64 direct convolution, within
an elementwise bound derived from what they round: V = B^T d B and U = G g G^T each to bfloat16
(relative 2^-9 apiece, so each product is off by at most ~2^-8 of |V||U|), summed over the
channels and carried through A^T ... A by absolute values; plus the float32 sums, and 2^-8 of
the result for a bfloat16 store.  Only the AVX512-BF16 build computes."""
import importlib

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from workbench.routines.conv_winograd import G_MAT, transform_weights
from workbench.runtime import cpu

BF16 = np.dtype(ml_dtypes.bfloat16)
NATIVE = cpu.kernel_module("winograd_bf16", "avx512bf16")
needs_native = pytest.mark.skipif(NATIVE is None or not NATIVE.available,
                                  reason="needs AVX512-BF16 (cpu flag avx512_bf16)")

B_T = {2: np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64),
       4: np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                    [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float64)}
A_T = {2: np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64),
       4: np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], np.float64)}


def _act(x, code, p0, p1):
    return {1: lambda: np.maximum(x, 0), 2: lambda: np.clip(x, p0, p1),
            3: lambda: np.where(x < 0, x * p0, x)}.get(code, lambda: x)()


def _direct(x, w, pads):
    """float64 NHWC 3x3 stride-1 convolution."""
    pt, pl, pb, pr = pads
    xp = np.pad(x.astype(np.float64), ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    oh, ow = xp.shape[1] - 2, xp.shape[2] - 2
    out = np.zeros((x.shape[0], oh, ow, w.shape[0]))
    for i in range(3):
        for j in range(3):
            out += xp[:, i:i + oh, j:j + ow] @ w[:, :, i, j].astype(np.float64).T
    return out


def _bound(x, w, m, pads):
    """The elementwise error bound of the pre-epilogue sums (see the module docstring)."""
    pt, pl, pb, pr = pads
    n, h, wd, c = x.shape
    oh, ow = h + pt + pb - 2, wd + pl + pr - 2
    th, tw, a = -(-oh // m), -(-ow // m), m + 2
    xp = np.zeros((n, th * m + 2, tw * m + 2, c))
    xp[:, pt:pt + h, pl:pl + wd] = x.astype(np.float64)
    u = np.abs(np.einsum("ia,mcab,jb->ijcm", G_MAT[m], w.astype(np.float64), G_MAT[m]))
    at = np.abs(A_T[m])
    out = np.zeros((n, th * m, tw * m, w.shape[0]))
    for ti in range(th):
        for tj in range(tw):
            d = xp[:, ti * m:ti * m + a, tj * m:tj * m + a]
            v = np.abs(np.einsum("ia,nabc,jb->nijc", B_T[m], d, B_T[m]))
            s = np.einsum("nijc,ijcm->nijm", v, u) * (2.0 ** -8 + c * 2.0 ** -23)
            out[:, ti * m:ti * m + m, tj * m:tj * m + m] = np.einsum("ri,nijm,lj->nrlm", at, s, at)
    return out[:, :oh, :ow]


@needs_native
@settings(max_examples=40, deadline=None, derandomize=True)
@given(m=st.sampled_from([2, 4]), n=st.integers(1, 2), h=st.integers(1, 13), w=st.integers(1, 13),
       c=st.integers(1, 40), mo=st.integers(1, 40), pads=st.tuples(*[st.integers(0, 2)] * 4),
       x_f32=st.booleans(), y_f32=st.booleans(), code=st.sampled_from([0, 1, 2, 3]),
       residual=st.sampled_from([None, "pre", "post"]), post=st.booleans(), mode=st.sampled_from([0, 1]),
       tiles=st.sampled_from([0, 1, 5, 12]), threads=st.integers(1, 3), seed=st.integers(0, 2 ** 16))
def test_matches_direct_convolution_within_the_rounding_bound(m, n, h, w, c, mo, pads, x_f32, y_f32, code, residual,
                                                              post, mode, tiles, threads, seed):
    oh, ow = h + pads[0] + pads[2] - 2, w + pads[1] + pads[3] - 2
    if oh < 1 or ow < 1:
        return
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    if not x_f32:
        x = x.astype(BF16)
    wt = (rng.standard_normal((mo, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    bias = rng.standard_normal(mo).astype(np.float32)
    res = rng.standard_normal((n, oh, ow, mo)).astype(np.float32 if y_f32 else BF16) if residual else None
    aff = (rng.uniform(0.5, 2, mo).astype(np.float32), rng.standard_normal(mo).astype(np.float32)) if post else None
    p0, p1 = (-0.5, 0.7) if code == 2 else (0.1, 0)
    pu = NATIVE.pack(np.ascontiguousarray(transform_weights(wt, m).transpose(0, 2, 1)))
    out = np.full((n, oh, ow, mo), np.nan, np.float32 if y_f32 else BF16)
    bad = NATIVE.conv(x, pu, out, m, pads, bias, res, code, p0, p1, aff, residual == "post",
                      tiles=tiles, mode=mode, num_threads=threads)
    assert bad is False
    ref = _direct(x.astype(np.float32), wt, pads) + bias
    bound = _bound(x.astype(np.float32), wt, m, pads)
    if residual == "pre":
        ref = ref + res.astype(np.float64)
    ref = _act(ref, code, p0, p1)
    if aff is not None:
        ref, bound = ref * aff[0] + aff[1], bound * aff[0]
    if residual == "post":
        ref = ref + res.astype(np.float64)
    bound = bound + 1e-5 + (0 if y_f32 else 2.0 ** -8 * np.abs(ref))
    err = np.abs(out.astype(np.float64) - ref)
    assert np.all(err <= bound), f"worst excess {np.max(err - bound)} at {np.unravel_index(np.argmax(err - bound), err.shape)}"


@needs_native
def test_reports_nonfinite_input():
    x = np.ones((1, 6, 6, 16), np.float32)
    x[0, 2, 3, 5] = np.inf
    pu = NATIVE.pack(np.ascontiguousarray(transform_weights(np.ones((8, 16, 3, 3), np.float32), 2).transpose(0, 2, 1)))
    out = np.empty((1, 6, 6, 8), np.float32)
    assert NATIVE.conv(x, pu, out, 2, (1, 1, 1, 1), num_threads=2) is True
    x[0, 2, 3, 5] = 1
    assert NATIVE.conv(x, pu, out, 2, (1, 1, 1, 1), num_threads=2) is False


@needs_native
def test_bad_arguments_are_named():
    pu = NATIVE.pack(np.zeros((16, 4, 8), np.float32))
    x = np.zeros((1, 5, 5, 4), BF16)
    with pytest.raises(ValueError, match="packed weights hold"):
        NATIVE.conv(x, pu[:-1].copy(), np.empty((1, 5, 5, 8), BF16), 2, (1, 1, 1, 1))
    with pytest.raises(ValueError, match="output is"):
        NATIVE.conv(x, pu, np.empty((1, 4, 5, 8), BF16), 2, (1, 1, 1, 1))
    with pytest.raises(ValueError, match="overlaps"):
        y = np.zeros((1, 5, 5, 8), np.float32)
        NATIVE.conv(y[..., :4].copy(), pu, y, 2, (1, 1, 1, 1), residual=y)
    with pytest.raises(TypeError, match="must be"):
        NATIVE.conv(x.astype(np.float64), pu, np.empty((1, 5, 5, 8), BF16), 2, (1, 1, 1, 1))


def test_baseline_build_refuses_to_compute():
    base = importlib.import_module("workbench._kernels.winograd_bf16")
    assert base.available is False
    with pytest.raises(RuntimeError, match="AVX512-BF16"):
        base.conv(np.zeros((1, 4, 4, 2), np.float32), np.zeros(1, np.uint16), np.zeros((1, 4, 4, 2), np.float32),
                  2, (1, 1, 1, 1))
