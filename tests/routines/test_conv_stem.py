"""``cpu:{float32,bfloat16}:nhwc/stem_nchw_in``: a first convolution read from the NCHW float32
image, against the NumPy reference (float32 within 1e-4; bfloat16 within its one rounding), on
the shapes such layers have (RGB or gray images, any kernel, stride and padding, fused
activations and post-activation affines); not offered where it does not apply; and chosen by a
tuning without an input adapt."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from routine_helpers import assert_routine_matches, conv_graph
from workbench import routines
from workbench.runtime import cpu

KERNEL = cpu.kernel_module("stem_conv", "avx512")
pytestmark = pytest.mark.skipif(KERNEL is None or not KERNEL.available, reason="this CPU lacks AVX-512F")
DESCRIPTORS = ["cpu:float32:nhwc/stem_nchw_in", "cpu:bfloat16:nhwc/stem_nchw_in"]


@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(d=st.sampled_from(DESCRIPTORS), n=st.integers(1, 2), c=st.integers(1, 4), m=st.integers(1, 64),
       h=st.integers(1, 19), w=st.integers(1, 37), k=st.sampled_from([1, 2, 3, 5, 7]), s=st.sampled_from([1, 2, 3]),
       pads=st.tuples(*[st.integers(0, 3)] * 4), bias=st.booleans(),
       activation=st.sampled_from([None, "Relu", "Clip", "HardSwish", "Sigmoid", "LeakyRelu"]))
def test_stem_matches_the_reference(d, n, c, m, h, w, k, s, pads, bias, activation):
    if h + pads[0] + pads[2] < k or w + pads[1] + pads[3] < k:
        return
    rng = np.random.default_rng(c * 1000 + m * 10 + h + w)
    wt = rng.standard_normal((m, c, k, k)).astype(np.float32)
    g = conv_graph((n, c, h, w), wt, rng.standard_normal(m).astype(np.float32) if bias else None,
                   attrs=dict(strides=[s, s], pads=list(pads)), activation=activation)
    assert_routine_matches(g, d, expect_layers=["conv"])


def test_not_offered_past_its_limits():
    rng = np.random.default_rng(0)
    for x_shape, w_shape, attrs in [((1, 5, 8, 8), (8, 5, 3, 3), {}),        # more than 4 channels
                                    ((1, 3, 8, 8), (65, 3, 3, 3), {}),       # more than 64 outputs
                                    ((1, 4, 8, 8), (8, 2, 3, 3), dict(group=2)),
                                    ((1, 3, 9, 9), (8, 3, 3, 3), dict(dilations=[2, 2]))]:
        g = conv_graph(x_shape, rng.standard_normal(w_shape).astype(np.float32), attrs=attrs)
        layer = g.layer("conv")
        for d in DESCRIPTORS:
            assert not routines.get("Conv", d).applies(layer, g.input_specs(layer)), (d, x_shape, w_shape, attrs)


def test_kernel_checks_its_arguments():
    x = np.zeros((1, 3, 8, 8), np.float32)
    wp = KERNEL.pack(np.ones((16, 3, 3, 3), np.float32))
    with pytest.raises(ValueError, match="output is"):
        KERNEL.conv(x, wp, np.zeros((1, 8, 8, 16), np.float32), (3, 3), (2, 2), (1, 1, 1, 1))
    with pytest.raises(ValueError, match="packed weights"):
        KERNEL.conv(x, wp[:-1], np.zeros((1, 4, 4, 16), np.float32), (3, 3), (2, 2), (1, 1, 1, 1))
    with pytest.raises(TypeError, match="input"):
        KERNEL.conv(x.astype(np.float64), wp, np.zeros((1, 4, 4, 16), np.float32), (3, 3), (2, 2), (1, 1, 1, 1))
    with pytest.raises(ValueError, match="scratch"):
        KERNEL.conv(x, wp, np.zeros((1, 4, 4, 16), np.float32), (3, 3), (2, 2), (1, 1, 1, 1),
                    scratch=np.zeros(3, np.float32))
