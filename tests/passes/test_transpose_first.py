"""A detection head's Reshape (N, C, H*W) then Transpose (0, 2, 1), as Paddle2ONNX writes PicoDet's,
becomes Transpose (0, 2, 3, 1) then Reshape (passes/transpose_first.py): the same outputs as ONNX
Runtime, and, on a channels-last plan, both as views of the map's NHWC buffer."""
import numpy as np
import pytest
from onnx import helper

import workbench
from onnx_helpers import assert_matches_onnxruntime, check_round_trip, make_model
from routine_helpers import bkey, assert_routine_matches
from workbench import routines
from workbench.onnx_io.ort import relative_error, run_onnxruntime
from workbench.runtime.compiled import CompiledModel

VIEW = "cpu:float32:nhwc/view"


def picodet_head(rng, hw=(6, 9), classes=5, box=8, read_boxes=False):
    """One level of a PicoDet head: a 1x1 conv to classes + box channels, Split, Sigmoid on the
    scores, and each part flattened to (1, C, H*W) and transposed to (1, H*W, C); with
    ``read_boxes`` a layer also reads the boxes (as a decoder would)."""
    c = classes + box
    w = (rng.standard_normal((c, 4, 1, 1)) * 0.5).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["head"], name="conv"),
             helper.make_node("Split", ["head", "parts"], ["cls", "reg"], axis=1, name="split"),
             helper.make_node("Sigmoid", ["cls"], ["score"], name="sigmoid"),
             helper.make_node("Reshape", ["score", "shape_cls"], ["flat_cls"], name="reshape_cls"),
             helper.make_node("Transpose", ["flat_cls"], ["scores"], perm=[0, 2, 1], name="transpose_cls"),
             helper.make_node("Reshape", ["reg", "shape_reg"], ["flat_reg"], name="reshape_reg"),
             helper.make_node("Transpose", ["flat_reg"], ["boxes"], perm=[0, 2, 1], name="transpose_reg")]
    inits = [("w", w), ("b", b), ("parts", np.array([classes, box], np.int64)),
             ("shape_cls", np.array([1, classes, -1], np.int64)), ("shape_reg", np.array([0, box, -1], np.int64))]
    outputs = [("scores", None), ("boxes", None)]
    if read_boxes:
        nodes.append(helper.make_node("Relu", ["boxes"], ["decoded"], name="decode"))
        outputs.append(("decoded", None))
    return make_model(nodes, [("x", [1, 4, *hw])], outputs, inits)


def test_head_transposes_first(rng):
    model = picodet_head(rng)
    graph, _ = assert_matches_onnxruntime(model)
    assert graph.meta["passes"]["transpose_before_flatten"] == ["reshape_cls", "transpose_cls",
                                                               "reshape_reg", "transpose_reg"]
    for part, c in (("cls", 5), ("reg", 8)):
        first, then = graph.layer(f"reshape_{part}"), graph.layer(f"transpose_{part}")
        assert (first.op, first.attrs["perm"], first.out_specs[0].shape) == ("Transpose", [0, 2, 3, 1], (1, 6, 9, c))
        assert (then.op, then.attrs["shape"], then.out_specs[0].shape) == ("Reshape", [1, 54, c], (1, 54, c))
        assert then.inputs == first.outputs and then.attrs["fusion"] == "transposed_first"
    check_round_trip(graph, model)


@pytest.mark.parametrize("read_boxes", [False, True])
def test_channels_last_plan_moves_nothing(rng, read_boxes):
    model = picodet_head(rng, read_boxes=read_boxes)
    graph = workbench.load(model.SerializeToString())
    assignment = {}
    for layer in graph:   # channels-last wherever a routine is (the Reshapes have only NCHW ones)
        table, specs = routines.routines_for(layer.op), graph.input_specs(layer)
        fits = [d for d, r in table.items() if r.applies(layer, specs) and not d.endswith("/reference")]
        assignment[layer.name] = max(fits, key=lambda d: (":nhwc/" in d, d.endswith("/view")))
    compiled = CompiledModel(graph, assignment, num_threads=2)
    assert compiled.routines["conv"].descriptor.startswith("cpu:float32:nhwc/")
    assert {compiled.routines[n].descriptor for n in ("reshape_cls", "reshape_reg")} == {VIEW}
    # Each Transpose is its input's NHWC buffer, and each Reshape that, reinterpreted: no buffers.
    for name in ("reshape_cls", "transpose_cls", "reshape_reg", "transpose_reg"):
        out = graph.layer(name).outputs[0]
        assert not any(key[0] == out for key in compiled.memory.values), name
    # The box channels, a strided slice of the conv's pixels, are those views' base where only
    # the output copy reads them (workbench.runtime.slices); a layer that reads them as an array of one
    # stride gets them copied out by the Split.
    sliced = bkey("reg", "nhwc") in compiled.slices
    assert sliced != read_boxes
    assert (bkey("reg", "nhwc") in compiled.memory.values) == read_boxes
    for seed in (0, 1):
        feeds = workbench.random_inputs(graph, seed=seed)
        ours, theirs = compiled.run(feeds), run_onnxruntime(model, feeds)
        for name, want in theirs.items():
            assert ours[name].shape == want.shape
            assert relative_error(ours[name], want) <= 1e-4, name


def test_view_routine_run_on_its_own_buffers(rng):
    # Profiling and the checker run it on separate arrays: it copies the NHWC elements as they lie.
    graph = workbench.load(picodet_head(rng).SerializeToString())
    assert_routine_matches(graph, VIEW, expect_layers=["reshape_cls", "reshape_reg"])


@pytest.mark.parametrize("case", ["other_reader", "other_perm", "not_spatial"])
def test_left_alone(rng, case):
    shape, perm = [1, 3, -1], [0, 2, 1]
    outputs = [("y", None)]
    if case == "other_perm":
        perm = [2, 1, 0]
    if case == "not_spatial":
        shape = [1, 12, 5]   # (N, C*H, W): not a flattening of the spatial axes
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Reshape", ["r", "shape"], ["flat"], name="reshape"),
             helper.make_node("Transpose", ["flat"], ["y"], perm=perm, name="transpose")]
    if case == "other_reader":
        nodes.append(helper.make_node("Neg", ["flat"], ["z"], name="neg"))
        outputs.append(("z", None))
    model = make_model(nodes, [("x", [1, 3, 4, 5])], outputs, [("shape", np.array(shape, np.int64))])
    graph, _ = assert_matches_onnxruntime(model)
    assert graph.meta["passes"]["transpose_before_flatten"] == []
    assert (graph.layer("reshape").op, graph.layer("transpose").op) == ("Reshape", "Transpose")
