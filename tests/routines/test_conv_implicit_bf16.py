"""``cpu:bfloat16:nhwc/implicit_bf16`` and its float32-edged forms on whole Conv layers: within
the tolerance of their rounding of the reference, bit for bit the outputs of the im2col_bf16 form
with the same edges, and never offered where a pair of depth would cross a tap (odd channels)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from routine_helpers import assert_routine_matches, conv_graph, run_with_routine
from workbench import routines
from workbench.runtime import cpu

NATIVE = cpu.kernel_module("gemm_bf16", "avx512bf16")
pytestmark = pytest.mark.skipif(NATIVE is None or not NATIVE.available, reason="this CPU lacks AVX512-BF16")
EDGES = ["", "_f32out", "_f32in", "_f32io"]


@settings(max_examples=20, deadline=None, derandomize=True, database=None)
@given(edge=st.sampled_from(EDGES), c=st.integers(1, 20).map(lambda v: 2 * v), m=st.integers(1, 40),
       h=st.integers(3, 14), k=st.sampled_from([2, 3, 5]), s=st.sampled_from([1, 2]), pad=st.integers(0, 2),
       activation=st.sampled_from([None, "Relu", "HardSwish"]), residual=st.booleans())
def test_implicit_matches_the_reference_and_im2col(edge, c, m, h, k, s, pad, activation, residual):
    if h + 2 * pad < k:
        return
    rng = np.random.default_rng(c * 1000 + m * 10 + h)
    wt = rng.standard_normal((m, c, k, k)).astype(np.float32)
    g = conv_graph((1, c, h, h + 1), wt, rng.standard_normal(m).astype(np.float32),
                   attrs=dict(strides=[s, s], pads=[pad] * 4), activation=activation, residual=residual)
    assert_routine_matches(g, f"cpu:bfloat16:nhwc/implicit_bf16{edge}", expect_layers=["conv"])
    ours, _, _ = run_with_routine(g, f"cpu:bfloat16:nhwc/implicit_bf16{edge}", layers=["conv"])
    gathered, _, _ = run_with_routine(g, f"cpu:bfloat16:nhwc/im2col_bf16{edge}", layers=["conv"])
    for name, v in gathered.items():
        np.testing.assert_array_equal(ours[name], v)


def test_odd_channels_and_1x1_layers_are_not_offered():
    for c, k in ((3, 3), (8, 1)):
        g = conv_graph((1, c, 6, 6), np.ones((4, c, k, k), np.float32))
        layer = g.layer("conv")
        for edge in EDGES:
            assert not routines.get("Conv", f"cpu:bfloat16:nhwc/implicit_bf16{edge}").applies(layer, g.input_specs(layer))
