"""``cpu:bfloat16:nhwc/implicit_bf16`` and its float32-edged forms on whole Conv layers: within
the tolerance of their rounding of the reference, bit for bit the outputs of the im2col_bf16 form
with the same edges, never offered where a pair of depth would cross a tap (odd channels), and
writing NHWC Concat parts in place."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import workbench
from onnx import helper
from onnx_helpers import make_model
from routine_helpers import assert_routine_matches, bkey, compiled_in, conv_graph, run_with_routine
from workbench import routines
from workbench.runtime import cpu
from workbench.runtime.compiled import CompiledModel
from workbench.runtime.interpreter import ReferenceExecutor
from workbench.tuning.precision import compare, tolerance

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


@pytest.mark.parametrize("edge", ["", "_f32out"])
@pytest.mark.parametrize("second", ["implicit_bf16", "im2col_bf16", "winograd2_bf16"])
def test_convolutions_write_their_nhwc_concat_parts_in_place(edge, second):
    """A 1x1 and a 3x3 bfloat16 convolution joined by a Concat write their outputs as channel
    slices of its buffer (no copy), and the model still matches the reference."""
    rng = np.random.default_rng(5)
    w1 = rng.standard_normal((6, 16, 1, 1)).astype(np.float32)
    w2 = rng.standard_normal((10, 16, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w1"], ["a"], name="c1"),
             helper.make_node("Conv", ["r", "w2"], ["b"], name="c2", pads=[1, 1, 1, 1]),
             helper.make_node("Concat", ["a", "b"], ["out"], name="cat", axis=1)]
    model = make_model(nodes, [("x", [1, 16, 7, 9])], [("out", [1, 16, 7, 9])], [("w1", w1), ("w2", w2)])
    graph = workbench.load(model.SerializeToString())
    # float32 image in; the parts, and so the Concat, in bfloat16 ("") or float32 ("_f32out")
    dtype, form = ("float32", "_f32io") if edge else ("bfloat16", "_f32in")
    wanted = {"c1": f"cpu:bfloat16:nhwc/gemm1x1_bf16{form}", "c2": f"cpu:bfloat16:nhwc/{second}{form}",
              "cat": f"cpu:{dtype}:nhwc/copy"}
    base = compiled_in(graph, "nhwc").assignment
    assignment = {l.name: wanted.get(l.name) or base[l.name] for l in graph}
    compiled = CompiledModel(graph, assignment, num_threads=2)
    for part in ("a", "b"):
        assert compiled.slices[bkey(part, "nhwc", dtype)].base == bkey("out", "nhwc", dtype)
    feeds = {"x": rng.standard_normal((1, 16, 7, 9)).astype(np.float32)}
    err = compare([compiled.run(feeds)], [ReferenceExecutor(graph).run(feeds)])
    assert err.max_rel < tolerance(1 + routines.error_weight(wanted["c2"])), err
    feeds["x"][0, 3, 2, 4] = np.nan   # Winograd reruns such an input on im2col, into the same slice
    got, want = compiled.run(feeds)["out"], ReferenceExecutor(graph).run(feeds)["out"]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
