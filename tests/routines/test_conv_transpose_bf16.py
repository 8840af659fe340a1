"""``cpu:bfloat16:nhwc/shuffle_bf16`` (and ``_f32out``): ConvTranspose with kernel == stride on the
bfloat16 GEMM, against the float32 reference within the rounding tolerance of one bfloat16 layer;
not offered where the kernel is not the stride or the activation has a per-channel slope; bad
arguments to the kernel are errors, not crashes.  (NaN propagation is test_conv_transpose's, with
the float32 forms.)"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from routine_helpers import assert_routine_matches, conv_transpose_graph as _graph
from workbench import routines
from workbench.routines import conv_transpose_bf16

KERNEL = conv_transpose_bf16._kernels()
pytestmark = pytest.mark.skipif(KERNEL is None, reason="this CPU lacks AVX512-BF16")
DESCRIPTORS = ["cpu:bfloat16:nhwc/shuffle_bf16", "cpu:bfloat16:nhwc/shuffle_bf16_f32out"]


@settings(deadline=None, derandomize=True, max_examples=30, database=None)
@given(st.integers(1, 2), st.integers(1, 40), st.integers(1, 40), st.integers(1, 6), st.integers(1, 30),
       st.tuples(st.integers(1, 3), st.integers(1, 3)), st.booleans(), st.sampled_from([None, "Relu", "Sigmoid"]),
       st.sampled_from(DESCRIPTORS), st.sampled_from([1, 2, 3]))
def test_kernel_equals_stride_matches_the_reference(n, c, m, h, w, k, bias, act, descriptor, threads):
    rng = np.random.default_rng(n + 10 * c + 100 * m + h * w)
    wt = rng.standard_normal((c, m, *k)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32) if bias else None
    g = _graph((n, c, h, w), wt, b, act, kernel_shape=list(k), strides=list(k))
    assert_routine_matches(g, descriptor, num_threads=threads, expect_layers=[next(iter(g)).name])


@pytest.mark.parametrize("attrs, act", [(dict(kernel_shape=[2, 2], strides=[1, 1]), None),
                                        (dict(kernel_shape=[2, 2], strides=[2, 2], pads=[1, 0, 1, 0]), None),
                                        (dict(kernel_shape=[2, 2], strides=[2, 2]), "PRelu")])
def test_not_offered_beyond_its_kernels(attrs, act):
    g = _graph((1, 4, 3, 5), np.ones((4, 2, 2, 2), np.float32), None, act, **attrs)
    layer = next(iter(g))
    for d in DESCRIPTORS:
        assert not routines.get("ConvTranspose", d).applies(layer, g.input_specs(layer))


def test_bad_arguments_are_errors():
    import ml_dtypes
    bf16 = np.dtype(ml_dtypes.bfloat16)
    x = np.zeros((1, 3, 4, 8), bf16)
    wp = KERNEL.pack(np.ones((8, 5, 2, 2), np.float32))
    with pytest.raises(ValueError, match="output is"):
        KERNEL.conv_transpose_shuffle(x, wp, np.zeros((1, 6, 7, 5), bf16), 2, 2)
    with pytest.raises(ValueError, match="packed weights hold"):
        KERNEL.conv_transpose_shuffle(x, wp[:-1], np.zeros((1, 6, 8, 5), bf16), 2, 2)
    with pytest.raises(ValueError, match="bias must have shape"):
        KERNEL.conv_transpose_shuffle(x, wp, np.zeros((1, 6, 8, 5), bf16), 2, 2, np.zeros(5, np.float32))
    with pytest.raises(TypeError, match="input must be bfloat16"):
        KERNEL.conv_transpose_shuffle(x.astype(np.float32), wp, np.zeros((1, 6, 8, 5), bf16), 2, 2)
    with pytest.raises(ValueError, match="overlaps"):
        buf = np.zeros(1 * 6 * 8 * 5, bf16)
        KERNEL.conv_transpose_shuffle(buf[:96].reshape(1, 3, 4, 8), wp, buf.reshape(1, 6, 8, 5), 2, 2)
