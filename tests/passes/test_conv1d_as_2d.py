"""1-D convolutions rewritten as 2-D ones of height 1 (ir/passes/conv1d_as_2d.py): after fusion
(BatchNorm, activation, a residual added after it), the graph computes what ONNX Runtime does,
the fast 2-D routines take the Conv, and the export runs in ONNX Runtime and imports again."""
import numpy as np
import pytest
from onnx import helper

from onnx_helpers import assert_matches_onnxruntime, check_round_trip, make_model
from routine_helpers import assert_routine_matches
from workbench import routines


def _model(stride, dilation, group, residual):
    rng = np.random.default_rng(stride * 10 + dilation + group)
    c, o, k = 8, 8, 3
    inits = [("w", rng.standard_normal((o, c // group, k)).astype(np.float32)), ("b", rng.standard_normal(o).astype(np.float32)),
             ("s", rng.uniform(0.5, 1.5, o).astype(np.float32)), ("t", rng.standard_normal(o).astype(np.float32)),
             ("m", rng.standard_normal(o).astype(np.float32)), ("v", rng.uniform(0.5, 1.5, o).astype(np.float32))]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", strides=[stride], dilations=[dilation],
                              group=group, pads=[dilation, dilation]),
             helper.make_node("BatchNormalization", ["c", "s", "t", "m", "v"], ["n"], name="bn")]
    if residual in ("before", "other"):   # conv + x (or another tensor), then the activation: fused into the Conv
        skip = "x" if residual == "before" else "z"
        nodes += [helper.make_node("Add", ["n", skip], ["a"], name="add"), helper.make_node("Relu", ["a"], ["y"], name="relu")]
    else:
        nodes.append(helper.make_node("Relu", ["n"], ["y" if not residual else "r"], name="relu"))
        if residual:
            nodes.append(helper.make_node("Add", ["r", "x"], ["y"], name="add"))
    inputs = [("x", [2, c, 37])] + ([("z", [2, o, 37])] if residual == "other" else [])
    return make_model(nodes, inputs, [("y", None)], inits)


@pytest.mark.parametrize("stride, dilation, group, residual", [(1, 1, 1, "after"), (2, 1, 1, None), (1, 2, 2, "after"),
                                                                (1, 1, 8, None), (1, 1, 1, "before"), (1, 3, 1, "other")])
def test_a_1d_conv_runs_as_2d(stride, dilation, group, residual):
    model = _model(stride, dilation, group, residual)
    graph, _ = assert_matches_onnxruntime(model)
    conv = graph.layer("conv")
    assert conv.attrs["kernel_shape"] == [1, 3] and conv.consts[1].ndim == 4 and conv.attrs.get("activation") == "Relu"
    assert bool(conv.attrs.get("residual")) == (residual in ("before", "other"))   # its input reshaped too
    fast = [r.descriptor for r in routines.applicable(graph, conv) if r.algo != "reference"]
    assert fast, "no fast routine takes the rewritten Conv"
    assert_routine_matches(graph, fast[0], expect_layers=["conv"])
    check_round_trip(graph, model)
