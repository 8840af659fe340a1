"""ConvTranspose (GEMM + col2im) against the reference: groups, strides, dilations, pads (negative
end pads included), output_padding, output_shape, fused activations, both layouts, 1-D."""

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from routine_helpers import assert_routine_matches, conv_transpose_graph as _graph, parallel_even_when_small
from workbench import routines
from workbench.routines import conv_transpose

SETTINGS = settings(deadline=None, derandomize=True, max_examples=25)
DESCRIPTORS = ["cpu:float32:nchw/gemm", "cpu:float32:nhwc/gemm"]


@pytest.fixture(autouse=True, scope="module")
def _parallel_even_when_small():
    with parallel_even_when_small("col2im"):
        yield


@st.composite
def cases(draw):
    group = draw(st.sampled_from([1, 1, 2, 3]))
    cg, mg = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    k = [draw(st.integers(1, 4)), draw(st.integers(1, 4))]
    s = [draw(st.integers(1, 3)), draw(st.integers(1, 3))]
    d = [draw(st.integers(1, 2)), draw(st.integers(1, 2))]
    x_shape = (draw(st.integers(1, 2)), cg * group, draw(st.integers(1, 7)), draw(st.integers(1, 8)))
    begin = [draw(st.integers(0, 2)) for _ in range(2)]
    end = [draw(st.integers(-2, 2)) for _ in range(2)]
    out_pad = [draw(st.integers(0, max(s[i], d[i]) - 1)) for i in range(2)]
    for i in range(2):
        full = s[i] * (x_shape[2 + i] - 1) + out_pad[i] + (k[i] - 1) * d[i] + 1
        assume(full - begin[i] - end[i] > 0)
    rng = np.random.default_rng(sum(k) * 7 + sum(x_shape))
    w = rng.standard_normal((x_shape[1], mg, *k)).astype(np.float32)
    bias = rng.standard_normal(mg * group).astype(np.float32) if draw(st.booleans()) else None
    attrs = dict(kernel_shape=k, strides=s, dilations=d, pads=begin + end, output_padding=out_pad, group=group)
    return x_shape, w, bias, attrs, draw(st.sampled_from([None, "Relu", "Sigmoid", "PRelu"]))


@SETTINGS
@given(cases(), st.sampled_from(DESCRIPTORS))
def test_conv_transpose(case, descriptor):
    x_shape, w, bias, attrs, act = case
    assert_routine_matches(_graph(x_shape, w, bias, act, **attrs), descriptor)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
@pytest.mark.parametrize("descriptor", DESCRIPTORS)
def test_auto_pad_and_output_shape(auto_pad, descriptor):
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    assert_routine_matches(_graph((2, 4, 5, 6), w, auto_pad=auto_pad, strides=[2, 2]), descriptor)
    # An output_shape past the full size: zeros (+ bias) at the end, a negative end pad.
    assert_routine_matches(_graph((2, 4, 5, 6), w, np.ones(3, np.float32), strides=[2, 2], output_shape=[14, 15]),
                           descriptor)


def test_1d_channels_first_only():
    w = np.random.default_rng(1).standard_normal((4, 2, 3)).astype(np.float32)
    g = _graph((2, 4, 9), w, strides=[2], pads=[1, 0])
    assert_routine_matches(g, DESCRIPTORS[0])
    layer = next(iter(g))
    assert not routines.get("ConvTranspose", DESCRIPTORS[1]).applies(layer, g.input_specs(layer))


def test_depthwise_upsampling_like_a_decoder():
    w = np.random.default_rng(2).standard_normal((8, 1, 4, 4)).astype(np.float32)
    for d in DESCRIPTORS:
        assert_routine_matches(_graph((1, 8, 6, 6), w, group=8, strides=[2, 2], pads=[1, 1, 1, 1]), d)


def test_kernel_twin_checks_shapes():
    from workbench._kernels import col2im
    x = np.ones((1, 4, 3, 3), np.float32)
    w = np.ones((4, 2, 2, 2), np.float32)
    out = np.empty((1, 2, 4, 4), np.float32)
    scratch = np.empty(2 * 4 * 9, np.float32)
    col2im.conv_transpose(x, w, out, scratch, False, 1, (2, 2), (1, 1), (1, 1), (0, 0))
    np.testing.assert_allclose(out[0, 0, 1, 1], 16)
    with pytest.raises(ValueError, match="scratch"):
        col2im.conv_transpose(x, w, out, scratch[:10], False, 1, (2, 2), (1, 1), (1, 1), (0, 0))
    with pytest.raises(ValueError, match="w has shape"):
        col2im.conv_transpose(x, w, out, scratch, False, 1, (3, 3), (1, 1), (1, 1), (0, 0))
    with pytest.raises(ValueError, match="group"):
        col2im.conv_transpose(x, w, out, scratch, False, 3, (2, 2), (1, 1), (1, 1), (0, 0))
    with pytest.raises(ValueError, match="non-negative"):
        col2im.conv_transpose(x, w, out, scratch, False, 1, (2, 2), (1, 1), (1, 1), (-1, 0))
    with pytest.raises(ValueError, match="bias"):
        col2im.conv_transpose(x, w, out, scratch, False, 1, (2, 2), (1, 1), (1, 1), (0, 0), bias=np.ones(3, np.float32))
    with pytest.raises(ValueError, match="4-D"):
        col2im.conv_transpose(x[0], w, out, scratch, False, 1, (2, 2), (1, 1), (1, 1), (0, 0))


SHUFFLE = ["cpu:float32:nchw/shuffle", "cpu:float32:nhwc/shuffle"]
if conv_transpose._gemm512() is not None:   # the AVX-512 variant, where this CPU and build run it
    SHUFFLE.append("cpu:float32:nhwc/shuffle_avx512")


@settings(deadline=None, derandomize=True, max_examples=30)
@given(st.integers(1, 2), st.integers(1, 9), st.integers(1, 7), st.integers(1, 6), st.integers(1, 7),
       st.tuples(st.integers(1, 4), st.integers(1, 4)), st.booleans(), st.sampled_from([None, "Relu", "PRelu"]),
       st.sampled_from(SHUFFLE), st.sampled_from([1, 2, 3]))
def test_kernel_equals_stride_shuffle(n, c, m, h, w, k, bias, act, descriptor, threads):
    """kernel == stride, no pads: the GEMM + pixel shuffle path, against the reference; one-hot
    weights would hide nothing here (every output pixel is one tap), so weights are random."""
    rng = np.random.default_rng(n + 10 * c + 100 * m + h * w)
    wt = rng.standard_normal((c, m, *k)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32) if bias else None
    g = _graph((n, c, h, w), wt, b, act, kernel_shape=list(k), strides=list(k))
    assert_routine_matches(g, descriptor, num_threads=threads)


@pytest.mark.parametrize("attrs", [dict(pads=[1, 0, 1, 0]), dict(output_padding=[1, 0], strides=[2, 2]),
                                   dict(group=2), dict(strides=[2, 1]), dict(dilations=[2, 1])])
def test_shuffle_applies_only_to_kernel_equals_stride(attrs):
    a = dict(kernel_shape=[2, 2], strides=[2, 2])
    a.update(attrs)
    g = _graph((1, 4, 3, 5), np.ones((4, 2 // a.get("group", 1) * a.get("group", 1), 2, 2), np.float32), **a)
    layer = next(iter(g))
    for d in SHUFFLE:
        assert not routines.get("ConvTranspose", d).applies(layer, g.input_specs(layer))
    g = _graph((1, 4, 3, 5), np.ones((4, 2, 2, 2), np.float32), kernel_shape=[2, 2], strides=[2, 2])
    layer = next(iter(g))
    assert all(routines.get("ConvTranspose", d).applies(layer, g.input_specs(layer)) for d in SHUFFLE)


def test_shuffle_nan_propagates():
    from routine_helpers import run_with_routine
    from workbench.routines import conv_transpose_bf16
    g = _graph((1, 3, 4, 5), np.random.default_rng(0).standard_normal((3, 2, 2, 2)).astype(np.float32),
               kernel_shape=[2, 2], strides=[2, 2])
    x = np.random.default_rng(1).standard_normal((1, 3, 4, 5)).astype(np.float32)
    x[0, 1, 2, 3] = np.nan
    bf16 = (["cpu:bfloat16:nhwc/shuffle_bf16", "cpu:bfloat16:nhwc/shuffle_bf16_f32out"]
            if conv_transpose_bf16._kernels() is not None else [])
    for d in SHUFFLE + bf16:
        ours, ref, used = run_with_routine(g, d, feeds={"x": x})
        assert used
        np.testing.assert_array_equal(np.isnan(ours["y"]), np.isnan(ref["y"]))
        assert np.isnan(ours["y"]).sum() == 2 * 4
