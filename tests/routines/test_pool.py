"""Pooling routines (NCHW and NHWC) against the reference, inside the compiled executor."""

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st
from onnx import helper

import workbench
from onnx_helpers import make_model
from routine_helpers import assert_routine_matches, parallel_even_when_small
from workbench import routines
from workbench._kernels import pool as pool_kernels

SETTINGS = settings(deadline=None, derandomize=True, max_examples=20)
DESCRIPTORS = ["cpu:float32:nchw/direct", "cpu:float32:nhwc/direct"]


@pytest.fixture(autouse=True, scope="module")
def _parallel_even_when_small():
    with parallel_even_when_small("pool"):
        yield


def _graph(op, shape, opset=19, **attrs):
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    return workbench.load(make_model([node], [("x", shape)], [("y", None)], opset=opset).SerializeToString())


@st.composite
def windows(draw, dilations=True):
    k = [draw(st.integers(1, 4)) for _ in range(2)]
    attrs = dict(kernel_shape=k, strides=[draw(st.integers(1, 3)) for _ in range(2)],
                 pads=[draw(st.integers(0, kk - 1)) for kk in k * 2], ceil_mode=draw(st.integers(0, 1)))
    if dilations:
        attrs["dilations"] = [draw(st.integers(1, 3)) for _ in range(2)]
    shape = [draw(st.integers(1, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 13)), draw(st.integers(1, 13))]
    d = attrs.get("dilations", [1, 1])
    for i in range(2):
        assume(shape[2 + i] + attrs["pads"][i] + attrs["pads"][i + 2] >= (k[i] - 1) * d[i] + 1)
    return shape, attrs


@SETTINGS
@given(windows(), st.sampled_from(DESCRIPTORS))
def test_max_pool(case, descriptor):
    shape, attrs = case
    assert_routine_matches(_graph("MaxPool", shape, **attrs), descriptor, rtol=0)


@SETTINGS
@given(windows(), st.integers(0, 1), st.sampled_from(DESCRIPTORS))
def test_average_pool(case, include_pad, descriptor):
    shape, attrs = case
    assert_routine_matches(_graph("AveragePool", shape, count_include_pad=include_pad, **attrs), descriptor)


@SETTINGS
@given(st.sampled_from(["MaxPool", "AveragePool"]), st.integers(1, 4), st.integers(1, 3), st.integers(0, 1),
       st.integers(4, 20))
def test_1d_pool_runs_channels_first(op, k, s, pad, length):
    attrs = dict(kernel_shape=[k], strides=[s], pads=[min(pad, k - 1)] * 2)
    assert_routine_matches(_graph(op, [2, 3, length], **attrs), DESCRIPTORS[0])
    g = _graph(op, [2, 3, length], **attrs)
    layer = next(iter(g))
    assert not routines.get(op, DESCRIPTORS[1]).applies(layer, g.input_specs(layer))


@SETTINGS
@given(st.sampled_from(["GlobalAveragePool", "GlobalMaxPool"]), st.integers(1, 3), st.integers(1, 150),
       st.integers(1, 9), st.integers(1, 9), st.sampled_from(DESCRIPTORS))
def test_global_pool(op, n, c, h, w, descriptor):
    assert_routine_matches(_graph(op, [n, c, h, w]), descriptor)


@pytest.mark.parametrize("n, c, h, w", [(1, 24, 160, 160), (2, 96, 17, 31), (1, 5, 16, 16), (3, 130, 20, 13)])
@pytest.mark.parametrize("is_max", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_global_pool_nhwc_large_images_in_runs_of_pixels(n, c, h, w, is_max, threads):
    """Images of 256 pixels or more are split into runs of pixels whose partial results are
    combined: against NumPy, a NaN planted in one run and an infinity in another."""
    rng = np.random.default_rng(c + h)
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    x[0, h - 1, w - 1, 1] = np.nan
    x[-1, 0, 0, 2] = np.inf
    y = np.full((n, 1, 1, c), -7, np.float32)
    pool_kernels.global_pool_nhwc(x, y, is_max, threads)
    want = x.max(axis=(1, 2), keepdims=True) if is_max else x.astype(np.float64).mean(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(y, want, rtol=2e-6, atol=1e-6)


def test_global_pool_other_ranks_only_channels_first():
    g = _graph("GlobalAveragePool", [2, 5, 7])
    assert_routine_matches(g, DESCRIPTORS[0])
    layer = next(iter(g))
    assert not routines.get("GlobalAveragePool", DESCRIPTORS[1]).applies(layer, g.input_specs(layer))


def test_rejects_non_float32_and_3d_pools():
    g = _graph("MaxPool", [1, 2, 4, 4, 4], kernel_shape=[2, 2, 2])
    layer = next(iter(g))
    for d in DESCRIPTORS:
        assert not routines.get("MaxPool", d).applies(layer, g.input_specs(layer))
    g = _graph("MaxPool", [1, 2, 4, 4], kernel_shape=[2, 2])
    layer = next(iter(g))
    specs = [s.__class__(s.shape, "float64") for s in g.input_specs(layer)]
    assert not routines.get("MaxPool", DESCRIPTORS[0]).applies(layer, specs)


def test_window_in_padding_gives_lowest_and_zero():
    # Dilation 3, pads 2, a 2-wide input: output 1 reads input -1 and 2, both in the padding.
    for op in ("MaxPool", "AveragePool"):
        g = _graph(op, [1, 2, 2, 2], kernel_shape=[2, 2], dilations=[3, 3], pads=[2, 2, 2, 2])
        assert_routine_matches(g, DESCRIPTORS[0], rtol=0)
        assert_routine_matches(g, DESCRIPTORS[1], rtol=0)


def test_kernel_twins_check_shapes():
    plan = pool_kernels.Pool2d((5, 6), (2, 3), (2, 2), (2, 2), (1, 1), (0, 0, 0, 0), True)
    x = np.zeros((1, 3, 5, 6), np.float32)
    plan.nchw(x, np.zeros((1, 3, 2, 3), np.float32))
    with pytest.raises(ValueError, match="needs output"):
        plan.nchw(x, np.zeros((1, 3, 3, 3), np.float32))
    with pytest.raises(ValueError, match="expected input"):
        plan.nchw(np.zeros((1, 3, 5, 7), np.float32), np.zeros((1, 3, 2, 3), np.float32))
    with pytest.raises(ValueError, match="expected input"):
        plan.nhwc(x, np.zeros((1, 2, 3, 6), np.float32))
    with pytest.raises(TypeError, match="float32"):
        plan.nchw(x.astype(np.float64), np.zeros((1, 3, 2, 3), np.float32))
    with pytest.raises(ValueError, match="contiguous"):
        plan.nchw(np.zeros((1, 3, 5, 12), np.float32)[..., ::2], np.zeros((1, 3, 2, 3), np.float32))
    with pytest.raises(ValueError, match="positive"):
        pool_kernels.Pool2d((5, 6), (2, 3), (0, 2), (2, 2), (1, 1), (0, 0, 0, 0), True)
    with pytest.raises(ValueError, match="needs output"):
        pool_kernels.global_pool_nhwc(np.zeros((2, 3, 4, 5), np.float32), np.zeros((2, 1, 1, 4), np.float32), True)
    with pytest.raises(ValueError, match="rank"):
        pool_kernels.global_pool_nchw(np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32), False)
    with pytest.raises(ValueError, match="read-only"):
        y = np.zeros((2, 3, 1, 1), np.float32)
        y.flags.writeable = False
        pool_kernels.global_pool_nchw(np.zeros((2, 3, 4, 5), np.float32), y, False)


@SETTINGS
@given(st.sampled_from([5, 9, 13]), st.integers(1, 2), st.integers(1, 3), st.integers(6, 24), st.integers(6, 24),
       st.sampled_from(["MaxPool", "AveragePool"]), st.sampled_from(DESCRIPTORS))
def test_large_same_windows(k, n, c, h, w, op, descriptor):
    # YOLO's SPP/SPPF pools: large stride-1 windows padded to keep the size, over non-square maps.
    attrs = dict(kernel_shape=[k, k], strides=[1, 1], pads=[k // 2] * 4)
    assert_routine_matches(_graph(op, [n, c, h, w], **attrs), descriptor, rtol=0 if op == "MaxPool" else 1e-5)


@pytest.mark.parametrize("descriptor", DESCRIPTORS)
@pytest.mark.parametrize("k, s, p", [(3, 2, 1), (2, 2, 0), (5, 1, 2), (3, 1, 1), (9, 1, 4)])
def test_max_pool_nan_and_inf_as_onnxruntime(descriptor, k, s, p):
    """A NaN in a window gives NaN, as in the reference.  ONNX Runtime's MaxPool folds taps with
    MAXPS alone, so its NaN survives only where its vector kernels happen to fold it last: every
    NaN it gives must be ours too, and every window without NaN must agree exactly (Inf too)."""
    from workbench.onnx_io.ort import run_onnxruntime
    from routine_helpers import run_with_routine
    c, h, w = 24, 11, 13
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[k, k], strides=[s, s], pads=[p] * 4)
    model = make_model([node], [("x", [1, c, h, w])], [("y", None)])
    g = workbench.load(model.SerializeToString())
    rng = np.random.default_rng(k * 10 + s)
    x = rng.standard_normal((1, c, h, w)).astype(np.float32)
    x[rng.random(x.shape) < 0.02] = np.nan
    x[0, 1, 4, 4] = np.inf
    x[0, 2, 6, 6] = -np.inf
    ours, ref, used = run_with_routine(g, descriptor, feeds={"x": x})
    assert used
    np.testing.assert_array_equal(ours["y"], ref["y"])
    theirs = run_onnxruntime(model, {"x": x})["y"]
    assert np.isnan(theirs).any() and np.isinf(theirs).any()
    assert not (np.isnan(theirs) & ~np.isnan(ours["y"])).any()
    clean = ~np.isnan(ours["y"])
    np.testing.assert_array_equal(ours["y"][clean], theirs[clean])


@SETTINGS
@given(st.integers(1, 3), st.integers(1, 40), st.integers(1, 9), st.integers(1, 9),
       st.sampled_from([[2, 3], [3, 2], [-1, -2], [2, -1]]), st.sampled_from([0, 1]), st.sampled_from(DESCRIPTORS),
       st.sampled_from([1, 2]))
def test_reduce_mean_over_space_is_a_global_pool(n, c, h, w, axes, keepdims, descriptor, threads):
    """ReduceMean over H and W (squeeze-excite blocks as Paddle exports them), keepdims or not,
    axes in any order or sign (opset 13: an attribute), on the global pool's kernels."""
    node = helper.make_node("ReduceMean", ["x"], ["y"], axes=axes, keepdims=keepdims)
    # not fused: over a 1x1 image it is a reshape (passes/identity.py, passes/reshapes.py)
    g = workbench.load(make_model([node], [("x", [n, c, h, w])], [("y", None)], opset=13).SerializeToString(),
                       fuse=False)
    layer = next(iter(g))
    assert routines.get("ReduceMean", descriptor).applies(layer, g.input_specs(layer))
    assert_routine_matches(g, descriptor, num_threads=threads)


@pytest.mark.parametrize("shape, axes", [([1, 4, 5, 6], [1]), ([1, 4, 5, 6], [1, 2, 3]), ([1, 4, 5], [2]),
                                         ([1, 4, 5, 6], [3])])
def test_reduce_mean_elsewhere_is_not_taken(shape, axes):
    node = helper.make_node("ReduceMean", ["x"], ["y"], axes=axes, keepdims=1)
    g = workbench.load(make_model([node], [("x", shape)], [("y", None)], opset=13).SerializeToString())
    layer = next(iter(g))
    for d in DESCRIPTORS:
        assert not routines.get("ReduceMean", d).applies(layer, g.input_specs(layer))


@pytest.mark.parametrize("k, s", [(3, 2), (5, 1)])   # the register path (<= 2(KH+KW) taps) and the separable one
@pytest.mark.parametrize("threads", [1, 2])
def test_nhwc_pools_read_and_write_channel_slices(k, s, threads):
    """SPPF's max pools read one Concat part and write the next: input and output as channel
    slices of wider NHWC buffers, against NumPy's sliding windows; the channels around untouched."""
    rng = np.random.default_rng(k + threads)
    n, h, w, c, p = 2, 11, 9, 24, k // 2
    src = rng.standard_normal((n, h, w, c + 13)).astype(np.float32)
    x = src[..., 5:5 + c]
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    big = np.full((n, oh, ow, 3 * c), 7.0, np.float32)
    y = big[..., c:2 * c]
    plan = pool_kernels.Pool2d((h, w), (oh, ow), (k, k), (s, s), (1, 1), (p, p, p, p), True)
    plan.nhwc(x, y, threads)
    padded = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (k, k), axis=(1, 2))[:, ::s, ::s]
    np.testing.assert_array_equal(y, windows.max(axis=(-2, -1)))
    assert (big[..., :c] == 7).all() and (big[..., 2 * c:] == 7).all()
    with pytest.raises(ValueError, match="channel slice"):
        plan.nhwc(x, np.zeros((n, 2 * oh, ow, c), np.float32)[:, ::2], threads)


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("k, pads, c", [(2, [0, 0, 1, 1], 24), (3, [1, 0, 1, 2], 5), (5, [2, 2, 2, 2], 40),
                                        (2, [0, 0, 0, 0], 17)])
def test_stride_one_windows_over_dense_pixels(op, k, pads, c):
    """Stride-1 windows whose taps all lie inside the input fold as one flat run of (pixel,
    channel) floats; the padded edges take the per-pixel path (PP-OCR's 2x2 pool padded only
    bottom-right; channel counts that are no multiple of 16)."""
    g = _graph(op, [1, c, 19, 23], kernel_shape=[k, k], strides=[1, 1], pads=pads)
    for descriptor in DESCRIPTORS:
        assert_routine_matches(g, descriptor, rtol=0 if op == "MaxPool" else 1e-5)
