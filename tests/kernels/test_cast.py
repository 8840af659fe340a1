"""float32 <-> bfloat16 casts (flat and fused with the NCHW/NHWC transpose) against ml_dtypes'
own conversion, in every ISA build; their refusal of bad arrays; the cast adapts and the paths
that compose them."""
import importlib

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from workbench.ir.formats import Format
from workbench.ir.graph import TensorSpec
from workbench.routines import adapts

BF16 = np.dtype(ml_dtypes.bfloat16)
BUILDS = [m for m in ("cast", "cast_avx2", "cast_avx512")
          if importlib.util.find_spec(f"workbench._kernels.{m}") is not None]


def _module(name):
    return importlib.import_module(f"workbench._kernels.{name}")


def _values(rng, n):
    """Floats over the whole range (denormals, values that round to infinity, ties) and the
    special values."""
    x = (rng.standard_normal(n) * 10.0 ** rng.integers(-45, 39, n)).astype(np.float32)
    ties = (rng.integers(0, 1 << 15, n // 4, dtype=np.uint32) << 16 | 0x8000).view(np.float32)   # exactly halfway
    special = np.array([np.inf, -np.inf, np.nan, -np.nan, 0.0, -0.0, 3.4028235e38, -3.4028235e38,
                        1e-45, 3.3961776e38], np.float32)
    return np.concatenate([special, ties, x])


def test_every_build_is_there():
    assert "cast" in BUILDS and len(BUILDS) >= 2


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("threads", [1, 2])
def test_round_to_nearest_even_as_ml_dtypes(build, threads):
    m = _module(build)
    x = _values(np.random.default_rng(3), 200_001)
    out = np.empty(x.shape, BF16)
    with np.errstate(over="ignore", invalid="ignore"):
        ref = x.astype(BF16)
    assert m.f32_to_bf16(x, out, threads) is out
    nan = np.isnan(x)
    np.testing.assert_array_equal(out.view(np.uint16)[~nan], ref.view(np.uint16)[~nan])
    got = out.astype(np.float32)
    assert np.isnan(got[nan]).all() and (np.signbit(got[nan]) == np.signbit(x[nan])).all()
    back = np.empty(x.shape, np.float32)
    m.bf16_to_f32(out, back, threads)
    np.testing.assert_array_equal(back.view(np.uint32), out.view(np.uint16).astype(np.uint32) << 16)   # exact


@settings(max_examples=30, deadline=None, derandomize=True)
@given(n=st.integers(1, 2), c=st.integers(1, 70), h=st.integers(1, 19), w=st.integers(1, 23),
       build=st.sampled_from(BUILDS), threads=st.sampled_from([1, 2]))
def test_fused_transposes_match_cast_then_transpose(n, c, h, w, build, threads):
    m = _module(build)
    x = np.random.default_rng(c * 100 + h).standard_normal((n, c, h, w)).astype(np.float32)
    y = np.empty((n, h, w, c), BF16)
    m.nchw_f32_to_nhwc_bf16(x, y, threads)
    np.testing.assert_array_equal(y.view(np.uint16), x.astype(BF16).transpose(0, 2, 3, 1).view(np.uint16))
    z = np.empty(x.shape, np.float32)
    m.nhwc_bf16_to_nchw_f32(y, z, threads)
    np.testing.assert_array_equal(z, y.astype(np.float32).transpose(0, 3, 1, 2))
    # the bfloat16 transposes move the words as they are, NaN payloads included
    y.view(np.uint16).flat[::7] = 0x7fc1
    back = np.empty((n, c, h, w), BF16)
    m.nhwc_bf16_to_nchw_bf16(y, back, threads)
    np.testing.assert_array_equal(back.view(np.uint16), y.view(np.uint16).transpose(0, 3, 1, 2))
    again = np.empty((n, h, w, c), BF16)
    m.nchw_bf16_to_nhwc_bf16(back, again, threads)
    np.testing.assert_array_equal(again.view(np.uint16), y.view(np.uint16))


@pytest.mark.parametrize("call, src, dst, message", [
    ("f32_to_bf16", np.zeros(5, np.float64), np.zeros(5, BF16), "float32 -> bfloat16"),
    ("f32_to_bf16", np.zeros(5, np.float32), np.zeros(6, BF16), "needs destination"),
    ("bf16_to_f32", np.zeros(5, np.float32), np.zeros(5, np.float32), "bfloat16 -> float32"),
    ("f32_to_bf16", np.zeros((4, 4), np.float32)[:, ::2], np.zeros((4, 2), BF16), "C-contiguous"),
    ("nchw_f32_to_nhwc_bf16", np.zeros((1, 2, 3, 4), np.float32), np.zeros((1, 2, 3, 4), BF16), "needs destination"),
    ("nhwc_bf16_to_nchw_f32", np.zeros((2, 3, 4), BF16), np.zeros((2, 3, 4), np.float32), "4-D"),
    ("nchw_bf16_to_nhwc_bf16", np.zeros((1, 2, 3, 4), BF16), np.zeros((1, 2, 3, 4), BF16), "needs destination"),
    ("nhwc_bf16_to_nchw_bf16", np.zeros((1, 2, 3, 4), np.float32), np.zeros((1, 4, 2, 3), BF16), "bfloat16 -> bfloat16"),
])
def test_bad_arrays_are_refused_before_any_work(call, src, dst, message):
    with pytest.raises((TypeError, ValueError), match=message):
        getattr(_module("cast"), call)(src, dst, 1)


F32_NCHW, F32_NHWC = Format("float32", "nchw"), Format("float32", "nhwc")
BF_NCHW, BF_NHWC = Format("bfloat16", "nchw"), Format("bfloat16", "nhwc")


def _run(path, spec, x):
    """Run a chain of adapts on ``x`` (held in ``spec``'s format) the way the executor does."""
    for a in path:
        out = np.empty(adapts.physical_shape(spec.with_format(a.dst)), np.dtype(a.dst.dtype))
        a.run(x, out, 2)
        x, spec = out, spec.with_format(a.dst)
    return x


@pytest.mark.parametrize("src, dst, hops", [
    (F32_NCHW, BF_NHWC, 1),    # the fused adapt, not a cast and a transpose
    (BF_NHWC, F32_NCHW, 1),
    (F32_NHWC, BF_NHWC, 1),
    (BF_NCHW, F32_NHWC, 2),    # no adapt does both: widened, then transposed
    (BF_NCHW, BF_NHWC, 1),     # the bfloat16 transpose
    (BF_NHWC, BF_NCHW, 1),
])
def test_paths_between_formats_compose_casts_and_transposes(src, dst, hops):
    spec = TensorSpec((1, 5, 3, 4)).with_format(src)
    path = adapts.path(spec, dst)
    assert len(path) == hops and path[0].src == src and path[-1].dst == dst
    x = np.random.default_rng(0).standard_normal((1, 5, 3, 4)).astype(np.float32)   # logical NCHW values
    held = x.astype(np.dtype(src.dtype))   # in the source format: rounded to bfloat16 if it is one
    held = held.transpose(0, 2, 3, 1).copy() if src.layout == "nhwc" else held
    got = _run(path, spec, held)
    want = held.astype(np.float32)
    want = want.transpose(0, 3, 1, 2) if src.layout == "nhwc" else want   # back to NCHW
    want = want.astype(np.dtype(dst.dtype))
    want = want.transpose(0, 2, 3, 1) if dst.layout == "nhwc" else want
    np.testing.assert_array_equal(np.asarray(got).astype(np.float32), want.astype(np.float32))


def test_casts_apply_to_any_rank_transposes_to_images():
    vec = TensorSpec((7, 3))
    assert [a.__name__ for a in adapts.path(vec, Format("bfloat16", "nchw"))] == ["F32ToBf16Nchw"]
    with pytest.raises(ValueError, match="no adapt converts"):
        adapts.path(vec, F32_NHWC)


def test_a_chain_runs_its_hops_as_one_conversion():
    """adapts.Chain (how the profiler prices a pair only a chain converts) gives what running
    the hops one by one gives."""
    spec = TensorSpec((2, 6, 5, 3)).with_format(BF_NCHW)
    hops = adapts.path(spec, F32_NHWC)
    chain = adapts.Chain(hops, spec)
    assert len(hops) == 2 and (chain.src, chain.dst) == (BF_NCHW, F32_NHWC) and "+" in chain.name
    x = np.random.default_rng(1).standard_normal((2, 6, 5, 3)).astype(BF16)
    out = np.empty((2, 5, 3, 6), np.float32)
    chain.run(x, out, 2)
    np.testing.assert_array_equal(out, _run(hops, spec, x))
    assert not chain.is_view(spec)
