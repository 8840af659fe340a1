"""The bfloat16 depthwise routines (``cpu:bfloat16:nhwc/depthwise_bf16``, ``depthwise_wide_bf16``,
``depthwise_dot_bf16`` and their ``_f32out``) on whole Conv layers, fused activations included, against the reference
within the tolerance their rounding allows (:func:`routine_helpers.assert_routine_matches`); the
kernels themselves (``depthwise_bf16.pyx``) are checked element by element in
``tests/kernels/test_gemm_bf16.py``."""
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from routine_helpers import ACTIVATION_ATTRS, assert_routine_matches, conv_graph
from workbench import routines
from workbench.runtime import cpu

NATIVE = cpu.kernel_module("depthwise_bf16", "avx512bf16")
pytestmark = pytest.mark.skipif(NATIVE is None or not NATIVE.available, reason="this CPU lacks AVX512-BF16")
FORMS = ["depthwise_bf16", "depthwise_bf16_f32out", "depthwise_wide_bf16", "depthwise_wide_bf16_f32out",
         "depthwise_dot_bf16", "depthwise_dot_bf16_f32out"]


@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(form=st.sampled_from(FORMS), c=st.integers(1, 70), h=st.integers(3, 20), w=st.integers(3, 20),
       k=st.sampled_from([3, 5, 7]), s=st.sampled_from([1, 2]), pad=st.integers(0, 3),
       activation=st.sampled_from([None, "Relu", "HardSwish", "Sigmoid", "LeakyRelu"]), threads=st.integers(1, 3))
def test_depthwise_routines_match_the_reference(form, c, h, w, k, s, pad, activation, threads):
    if h + 2 * pad < k or w + 2 * pad < k:
        return
    rng = np.random.default_rng(c * 400 + h * 20 + w)
    wt = rng.standard_normal((c, 1, k, k)).astype(np.float32)
    g = conv_graph((1, c, h, w), wt, rng.standard_normal(c).astype(np.float32),
                   attrs=dict(group=c, strides=[s, s], pads=[pad] * 4), activation=activation,
                   act_attrs=ACTIVATION_ATTRS.get(activation))
    assert_routine_matches(g, f"cpu:bfloat16:nhwc/{form}", expect_layers=["conv"], num_threads=threads)


def test_the_wide_and_dot_forms_take_dilation_1_only():
    wt = np.ones((8, 1, 3, 3), np.float32)
    dilated = conv_graph((1, 8, 9, 9), wt, attrs=dict(group=8, dilations=[2, 2]))
    layer = dilated.layer("conv")
    for form in FORMS[2:]:
        assert not routines.get("Conv", f"cpu:bfloat16:nhwc/{form}").applies(layer, dilated.input_specs(layer))
    x = np.zeros((1, 9, 9, 8), ml_dtypes.bfloat16)
    wp, bp = NATIVE.pack_depthwise(np.ones((3, 3, 8), np.float32), None, True)
    with pytest.raises(ValueError, match="dilations"):
        NATIVE.conv_depthwise(x, wp, bp, np.zeros((1, 5, 5, 8), np.float32), (3, 3), (1, 1), (2, 2), (0,) * 4,
                              wide=True)
    with pytest.raises(ValueError, match="plain=True"):   # packed weights given to the wide form
        NATIVE.conv_depthwise(x, *NATIVE.pack_depthwise(np.ones((3, 3, 8), np.float32)),
                              np.zeros((1, 7, 7, 8), np.float32), (3, 3), (1, 1), (1, 1), (0,) * 4, wide=True)


def test_the_dot_form_takes_square_3_5_and_7_kernels_at_strides_1_and_2():
    """Other geometries are left to the other forms, and the kernel refuses them before running."""
    for kernel, strides, ok in [((3, 3), (1, 1), True), ((5, 5), (2, 2), True), ((3, 3), (2, 1), True),
                                ((7, 7), (1, 2), True), ((9, 9), (1, 1), False), ((3, 5), (1, 1), False), ((3, 3), (1, 3), False),
                                ((1, 1), (1, 1), False)]:
        wt = np.ones((8, 1) + kernel, np.float32)
        g = conv_graph((1, 8, 12, 12), wt, attrs=dict(group=8, strides=list(strides)))
        layer = g.layer("conv")
        assert routines.get("Conv", "cpu:bfloat16:nhwc/depthwise_dot_bf16").applies(layer, g.input_specs(layer)) == ok
        assert NATIVE.dot_handles(kernel, strides, (1, 1)) == ok
    x = np.zeros((1, 9, 9, 8), ml_dtypes.bfloat16)
    wp, bp = NATIVE.pack_depthwise_dot(np.ones((9, 9, 8), np.float32))
    with pytest.raises(ValueError, match="square kernels of 3, 5 and 7"):
        NATIVE.conv_depthwise(x, wp, bp, np.zeros((1, 1, 1, 8), np.float32), (9, 9), (1, 1), (1, 1), (0,) * 4, dot=True)
    wp, bp = NATIVE.pack_depthwise_dot(np.ones((3, 3, 40), np.float32))   # packed for 40 channels, given 8
    with pytest.raises(ValueError, match="pack_depthwise_dot"):
        NATIVE.conv_depthwise(x, wp, bp, np.zeros((1, 7, 7, 8), np.float32), (3, 3), (1, 1), (1, 1), (0,) * 4, dot=True)
