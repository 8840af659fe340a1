"""The bfloat16 pools (``cpu:bfloat16:nhwc/direct``: MaxPool, AveragePool, the global pools, the
spatial ReduceMean) against the NumPy reference within the bfloat16 tolerance; a max pool is
exact on bfloat16 inputs; NaN reaches the windows it lies in; the kernel refuses bad arrays."""
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from onnx import helper

import workbench
from onnx_helpers import make_model
from routine_helpers import assert_routine_matches, run_with_routine
from workbench.runtime import cpu

NATIVE = cpu.kernel_module("pool_bf16", "avx512bf16")
pytestmark = pytest.mark.skipif(NATIVE is None or not NATIVE.available, reason="this CPU lacks AVX512-BF16")
BF16 = "cpu:bfloat16:nhwc/direct"
SETTINGS = dict(deadline=None, derandomize=True, database=None)


def pool_graph(op, shape, **attrs):
    nodes = [helper.make_node(op, ["x"], ["y"], name="p", **attrs)]
    # not fused: a ReduceMean over a 1x1 image is a reshape (passes/identity.py, passes/reshapes.py)
    return workbench.load(make_model(nodes, [("x", list(shape))], [("y", None)]).SerializeToString(), fuse=False)


@settings(max_examples=40, **SETTINGS)
@given(op=st.sampled_from(["MaxPool", "AveragePool"]), n=st.integers(1, 2), c=st.integers(1, 70),
       hw=st.tuples(st.integers(1, 12), st.integers(1, 12)), k=st.tuples(st.integers(1, 5), st.integers(1, 5)),
       s=st.tuples(st.integers(1, 3), st.integers(1, 3)), pad=st.integers(0, 2), include=st.booleans(),
       threads=st.integers(1, 3), seed=st.integers(0, 2 ** 16))
def test_window_pools_match_reference(op, n, c, hw, k, s, pad, include, threads, seed):
    k = (min(k[0], hw[0] + 2 * pad), min(k[1], hw[1] + 2 * pad))
    pads = [min(pad, k[0] - 1), min(pad, k[1] - 1)] * 2
    attrs = dict(kernel_shape=list(k), strides=list(s), pads=pads)
    if op == "AveragePool":
        attrs["count_include_pad"] = int(include)
    assert_routine_matches(pool_graph(op, (n, c) + hw, **attrs), BF16, expect_layers=["p"], num_threads=threads,
                           seed=seed)


@settings(max_examples=20, **SETTINGS)
@given(op=st.sampled_from(["GlobalAveragePool", "GlobalMaxPool", "ReduceMean"]), n=st.integers(1, 2),
       c=st.integers(1, 150), hw=st.tuples(st.integers(1, 9), st.integers(1, 9)), keep=st.booleans(),
       threads=st.integers(1, 3), seed=st.integers(0, 2 ** 16))
def test_global_pools_match_reference(op, n, c, hw, keep, threads, seed):
    attrs = dict(axes=[2, 3], keepdims=int(keep)) if op == "ReduceMean" else {}
    assert_routine_matches(pool_graph(op, (n, c) + hw, **attrs), BF16, expect_layers=["p"], num_threads=threads,
                           seed=seed)


@pytest.mark.parametrize("shape", [(1, 40, 50, 24), (2, 31, 33, 96), (1, 64, 64, 150), (3, 2, 2, 7)])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_global_pools_of_large_maps_share_out_the_pixels(shape, threads):
    """Maps large enough to be cut into chunks of pixels (each job a max or sum of its own, combined
    last): the mean within float32 summation error, the max exact, a NaN in a late chunk kept."""
    bf = np.dtype(ml_dtypes.bfloat16)
    rng = np.random.default_rng(shape[3])
    x = rng.standard_normal(shape).astype(bf)
    x[-1, -1, -2, shape[3] // 2] = np.nan
    wide = x.astype(np.float64)
    for is_max in (False, True):
        y = np.full((shape[0], 1, 1, shape[3]), 7, bf)
        NATIVE.global_pool_nhwc(x, y, is_max, num_threads=threads)
        ref = (np.max if is_max else np.mean)(wide, axis=(1, 2), keepdims=True)
        got = y.astype(np.float64)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        ok = ~np.isnan(ref)
        if is_max:
            np.testing.assert_array_equal(got[ok], ref[ok])
        else:
            assert np.all(np.abs(got[ok] - ref[ok]) <= 2.0 ** -8 * np.abs(ref[ok]) + 1e-5)


def test_a_max_pool_is_exact_on_bfloat16_values():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 40, 11, 13)).astype(ml_dtypes.bfloat16).astype(np.float32)
    graph = pool_graph("MaxPool", x.shape, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    ours, ref, used = run_with_routine(graph, BF16, feeds={"x": x})
    np.testing.assert_array_equal(ours["y"], ref["y"])


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool", "GlobalMaxPool", "GlobalAveragePool"])
def test_nan_reaches_its_windows(op):
    x = np.random.default_rng(1).standard_normal((1, 20, 8, 8)).astype(np.float32)
    x[0, 3, 2, 2] = np.nan
    attrs = dict(kernel_shape=[2, 2], strides=[2, 2]) if "Global" not in op else {}
    ours, ref, used = run_with_routine(pool_graph(op, x.shape, **attrs), BF16, feeds={"x": x})
    assert used == ["p"]
    np.testing.assert_array_equal(np.isnan(ours["y"]), np.isnan(ref["y"]))
    assert np.isnan(ref["y"]).sum() == 1


def test_the_kernel_refuses_bad_arrays():
    bf = np.dtype(ml_dtypes.bfloat16)
    with pytest.raises(ValueError, match="bfloat16"):
        NATIVE.global_pool_nhwc(np.zeros((1, 2, 2, 4), np.float32), np.zeros((1, 1, 1, 4), bf), False)
    with pytest.raises(ValueError, match="needs output"):
        NATIVE.global_pool_nhwc(np.zeros((1, 2, 2, 4), bf), np.zeros((1, 1, 1, 5), bf), False)
    pool = NATIVE.Pool2dBf16((4, 4), (2, 2), (2, 2), (2, 2), (1, 1), (0, 0, 0, 0), True)
    with pytest.raises(ValueError, match="window needs"):
        pool.nhwc(np.zeros((1, 5, 4, 3), bf), np.zeros((1, 2, 2, 3), bf))
    with pytest.raises(ValueError, match="C-contiguous"):
        pool.nhwc(np.zeros((1, 4, 4, 6), bf)[..., ::2], np.zeros((1, 2, 2, 3), bf))
