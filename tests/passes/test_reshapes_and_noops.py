"""The passes that remove copies exporters spell out once shapes are known: no-op layers
(passes/identity.py), reshapes in other ops' clothing and chains of them (passes/reshapes.py),
Slices and constant Gathers as one Split (passes/slices_as_split.py), ``x ** 2`` as ``x * x``
(passes/pow_as_mul.py).  Each graph computes what ONNX Runtime computes on the original, through the
reference and through compiled plans, and exports back to a model ONNX Runtime runs alike."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from onnx import helper, TensorProto

import workbench
from onnx_helpers import assert_matches_onnxruntime, check_round_trip, make_model
from workbench.onnx_io.ort import relative_error, run_onnxruntime
from workbench.runtime.compiled import CompiledModel
from workbench.tuning.filters import assign

I64 = np.int64


def _compiled_matches(model, graph, filters=(), seeds=(0, 1)):
    """The default plan (and ``filters``' one) runs like ONNX Runtime; returns the compiled model."""
    compiled = CompiledModel(graph, assign(graph, filters)[0], num_threads=2)
    for seed in seeds:
        feeds = workbench.random_inputs(graph, seed=seed)
        ours, theirs = compiled.run(feeds), run_onnxruntime(model, feeds)
        for name, want in theirs.items():
            assert ours[name].shape == want.shape, name
            assert relative_error(ours[name], want) <= 1e-4, name
    return compiled


def test_noops_are_removed():
    """A full Slice, a Cast to the same type, a Pad of nothing, an identity Transpose, a one-input
    Concat, an Expand and a Tile to the same shape, and a kept reduction over a size-1 axis."""
    big = np.iinfo(np.int64).max
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Slice", ["r", "s0", "send"], ["a"], name="slice"),
             helper.make_node("Cast", ["a"], ["b"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("Pad", ["b", "pads"], ["c"], name="pad"),
             helper.make_node("Transpose", ["c"], ["d"], name="transpose", perm=[0, 1, 2]),
             helper.make_node("Concat", ["d"], ["e"], name="concat", axis=1),
             helper.make_node("Expand", ["e", "shape"], ["f"], name="expand"),
             helper.make_node("Tile", ["f", "reps"], ["g"], name="tile"),
             helper.make_node("ReduceMax", ["g", "axes"], ["h"], name="reduce", keepdims=1),
             helper.make_node("Neg", ["h"], ["y"], name="neg")]
    inits = [("s0", np.array([0, 0], I64)), ("send", np.array([big, big], I64)), ("pads", np.zeros(6, I64)),
             ("shape", np.array([2, 3, 1], I64)), ("reps", np.array([1, 1, 1], I64)), ("axes", np.array([2], I64))]
    model = make_model(nodes, [("x", [2, 3, 1])], [("y", None)], inits, opset=18)
    graph, _ = assert_matches_onnxruntime(model)
    assert [l.name for l in graph] == ["relu", "neg"]
    assert graph.meta["passes"]["remove_identities"] == ["slice", "cast", "pad", "transpose", "concat", "expand",
                                                        "tile", "reduce"]
    _compiled_matches(model, graph)


def test_noops_that_are_not_left_alone():
    """A Slice of the same shape backwards, a Pad that crops one end and pads the other, a Cast
    to another type: each changes the elements and stays."""
    nodes = [helper.make_node("Slice", ["x", "st", "en", "ax", "steps"], ["a"], name="reverse"),
             helper.make_node("Pad", ["a", "pads"], ["b"], name="shift"),
             helper.make_node("Cast", ["b"], ["c"], name="to_int", to=TensorProto.INT32),
             helper.make_node("Cast", ["c"], ["y"], name="to_float", to=TensorProto.FLOAT)]
    inits = [("st", np.array([-1], I64)), ("en", np.array([-(2 ** 62)], I64)), ("ax", np.array([1], I64)),
             ("steps", np.array([-1], I64)), ("pads", np.array([0, -1, 0, 1], I64))]
    model = make_model(nodes, [("x", [2, 5])], [("y", None)], inits)
    graph, _ = assert_matches_onnxruntime(model)
    assert [l.name for l in graph] == ["reverse", "shift", "to_int", "to_float"]


def test_reshape_chains_collapse_and_a_round_trip_disappears():
    """Squeeze then Unsqueeze (back to the input's shape) is nothing; a Transpose moving only
    size-1 axes, a Gather from a size-1 axis and a keepdims=0 ReduceMean over one are reshapes,
    each reading the chain's first input."""
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Squeeze", ["r", "ax2"], ["sq"], name="squeeze"),
             helper.make_node("Unsqueeze", ["sq", "ax2"], ["un"], name="unsqueeze"),
             helper.make_node("Neg", ["un"], ["y1"], name="neg"),
             helper.make_node("Transpose", ["r"], ["t"], name="transpose", perm=[0, 2, 1, 3]),   # (2, 1, 4, 5)
             helper.make_node("Gather", ["t", "zero"], ["g"], name="gather", axis=1),            # (2, 4, 5)
             helper.make_node("ReduceMean", ["t", "ax1"], ["m"], name="mean", keepdims=0),        # (2, 4, 5)
             helper.make_node("Add", ["g", "m"], ["y2"], name="add")]
    inits = [("ax2", np.array([2], I64)), ("zero", np.array(0, I64)), ("ax1", np.array([1], I64))]
    model = make_model(nodes, [("x", [2, 4, 1, 5])], [("y1", None), ("y2", None)], inits, opset=18)
    graph, _ = assert_matches_onnxruntime(model)
    assert [l.op for l in graph] == ["Relu", "Neg", "Reshape", "Reshape", "Add"]
    assert graph.layer("neg").inputs == ["r"]
    assert graph.layer("gather").inputs == ["r"] and graph.layer("mean").inputs == ["r"]
    _compiled_matches(model, graph)
    check_round_trip(graph, model)


def test_a_reshape_that_is_a_graph_output_keeps_its_name():
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Unsqueeze", ["r", "ax"], ["u"], name="unsqueeze"),
             helper.make_node("Squeeze", ["u", "ax"], ["y"], name="squeeze")]
    model = make_model(nodes, [("x", [3, 4])], [("y", None)], [("ax", np.array([0], I64))])
    graph, _ = assert_matches_onnxruntime(model)
    assert [(l.name, l.outputs) for l in graph] == [("relu", ["y"])]
    _compiled_matches(model, graph)


def _state_model(gathers, slices=(), opset=17):
    """An LSTM-style state (2, 1, 8) whose entries are picked by constant Gathers (``gathers``:
    (name, index)) and Slices (``slices``: (name, start, end)) along axis 0, each added to a
    Conv of the other input (computed first, so that its buffers come before the pick)."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[1, 1]),
             helper.make_node("Reshape", ["c", "flat"], ["cf"], name="flatten")]
    inits = [("w", rng.standard_normal((8, 3, 1, 1)).astype(np.float32)), ("flat", np.array([1, 8], I64))]
    outputs = []
    for name, index in gathers:
        inits.append((f"{name}_i", np.array(index, I64)))
        nodes += [helper.make_node("Gather", ["s", f"{name}_i"], [f"{name}_g"], name=name, axis=0),
                  helper.make_node("Add", [f"{name}_g", "cf"], [f"{name}_y"], name=f"{name}_add")]
        outputs.append((f"{name}_y", None))
    for name, start, end in slices:
        inits += [(f"{name}_s", np.array([start], I64)), (f"{name}_e", np.array([end], I64)),
                  (f"{name}_a", np.array([0], I64))]
        nodes += [helper.make_node("Slice", ["s", f"{name}_s", f"{name}_e", f"{name}_a"], [f"{name}_p"], name=name),
                  helper.make_node("Neg", [f"{name}_p"], [f"{name}_y"], name=f"{name}_neg")]
        outputs.append((f"{name}_y", None))
    return make_model(nodes, [("x", [1, 3, 1, 1]), ("s", [2, 1, 8])], outputs, inits, opset=opset)


@pytest.mark.parametrize("opset", [11, 17])
def test_gathers_of_a_graph_input_are_views_of_one_split(opset):
    """Gather(state, 0) and Gather(state, 1) become one Split whose outputs are views of the input's
    buffer: loaded before the first step, whichever step cuts the views (a buffer planned live only
    from the Split on was reused by the Conv first, and the state read back was the Conv's output)."""
    model = _state_model([("h", 0), ("c", -1)], opset=opset)
    graph, _ = assert_matches_onnxruntime(model)
    (split,) = [l for l in graph if l.op == "Split"]
    assert split.inputs == ["s"] and split.attrs["split"] == [1, 1] and split.attrs["axis"] == 0
    assert sorted(graph.meta["passes"]["slices_as_split"]) == ["c", "h"]
    assert graph.layer("h").op == "Reshape"   # the scalar index drops the axis
    compiled = _compiled_matches(model, graph)
    assert {s.base[0] for s in compiled.slices.values()} >= {"s"}
    check_round_trip(graph, model)


def test_slices_with_gaps_duplicates_and_overlaps():
    # one range twice (one output shared) and a gap: contiguous along axis 0, so a Split
    model = _state_model([("a", 1)], slices=[("p", 1, 2), ("q", 1, 2)])
    graph, _ = assert_matches_onnxruntime(model)
    (split,) = [l for l in graph if l.op == "Split"]
    assert split.attrs["split"] == [1, 1] and graph.layer("q_neg").inputs == graph.layer("p_neg").inputs
    _compiled_matches(model, graph)
    # overlapping ranges: left as they are
    nodes = [helper.make_node("Slice", ["x", "s0", "e0"], ["p"], name="p"),
             helper.make_node("Slice", ["x", "s1", "e1"], ["q"], name="q")]
    inits = [("s0", np.array([0], I64)), ("e0", np.array([3], I64)), ("s1", np.array([1], I64)),
             ("e1", np.array([4], I64))]
    model = make_model(nodes, [("x", [4, 3])], [("p", None), ("q", None)], inits)
    graph, _ = assert_matches_onnxruntime(model)
    assert [l.op for l in graph] == ["Slice", "Slice"]


def test_a_strided_slice_with_a_gap_is_left_alone():
    """Along the last axis of a batch of rows, a partial range is no block of memory: a Split
    would copy the gap too."""
    nodes = [helper.make_node("Slice", ["x", "s", "e", "a"], ["y"], name="slice")]
    inits = [("s", np.array([2], I64)), ("e", np.array([5], I64)), ("a", np.array([1], I64))]
    model = make_model(nodes, [("x", [3, 8])], [("y", None)], inits)
    graph, _ = assert_matches_onnxruntime(model)
    assert [l.op for l in graph] == ["Slice"]


@settings(deadline=None, derandomize=True, max_examples=30)
@given(st.integers(1, 3), st.integers(1, 7), st.integers(1, 6), st.integers(0, 2), st.data())
def test_random_channel_cuts_match_onnxruntime(n, c, w, kind, data):
    """Slices and Gathers of random ranges along a random axis of a Conv's output (which the plans
    may keep in NHWC), fed to a Relu each: through every plan, the graph's outputs are ONNX Runtime's."""
    shape = [n, c + 1, 2, w]
    axis = data.draw(st.integers(0, 3))
    dim = shape[axis]
    nodes = [helper.make_node("Conv", ["x", "wt"], ["t"], name="conv", kernel_shape=[1, 1])]
    rng = np.random.default_rng(c + w)
    inits = [("wt", rng.standard_normal((shape[1], 3, 1, 1)).astype(np.float32))]
    outputs = []
    for k in range(data.draw(st.integers(1, 3))):
        start = data.draw(st.integers(0, dim - 1))
        stop = data.draw(st.integers(start + 1, dim))
        if kind == 0 or stop - start > 1:
            inits += [(f"s{k}", np.array([start], I64)), (f"e{k}", np.array([stop], I64)), (f"a{k}", np.array([axis], I64))]
            nodes.append(helper.make_node("Slice", ["t", f"s{k}", f"e{k}", f"a{k}"], [f"p{k}"], name=f"slice{k}"))
        else:
            inits.append((f"i{k}", np.array(start if kind == 1 else [start], I64)))
            nodes.append(helper.make_node("Gather", ["t", f"i{k}"], [f"p{k}"], name=f"gather{k}", axis=axis))
        nodes.append(helper.make_node("Relu", [f"p{k}"], [f"y{k}"], name=f"relu{k}"))
        outputs.append((f"y{k}", None))
    model = make_model(nodes, [("x", [n, 3, 2, w])], outputs, inits)
    graph, _ = assert_matches_onnxruntime(model)
    for filters in ((), ("cpu:float32:nhwc/*",)):
        _compiled_matches(model, graph, filters, seeds=(0,))


def test_a_square_is_a_product():
    """``sqrt(re ** 2 + im ** 2)``: the Pows become Muls and join the Add in one chain; NaN and
    infinities as ONNX Runtime has them."""
    nodes = [helper.make_node("Pow", ["x", "two"], ["a"], name="pow_re"),
             helper.make_node("Pow", ["z", "two"], ["b"], name="pow_im"),
             helper.make_node("Add", ["a", "b"], ["s"], name="add"),
             helper.make_node("Sqrt", ["s"], ["y"], name="sqrt"),
             helper.make_node("Pow", ["x", "three"], ["y3"], name="cube")]
    inits = [("two", np.array(2.0, np.float32)), ("three", np.array(3.0, np.float32))]
    model = make_model(nodes, [("x", [2, 33]), ("z", [2, 33])], [("y", None), ("y3", None)], inits)
    graph, _ = assert_matches_onnxruntime(model)
    assert graph.meta["passes"]["pow_as_mul"] == ["pow_re", "pow_im"]
    assert graph.layer("add").op == "EltwiseChain" and graph.layer("cube").op == "Pow"
    compiled = CompiledModel(graph, assign(graph)[0])
    x = np.random.default_rng(0).standard_normal((2, 33)).astype(np.float32)
    x[0, :4] = [np.nan, np.inf, -np.inf, 3e19]   # 3e19 squared overflows to inf
    feeds = {"x": x, "z": x[::-1].copy()}
    ours, theirs = compiled.run(feeds), run_onnxruntime(model, feeds)
    for name in theirs:
        np.testing.assert_array_equal(np.isnan(ours[name]), np.isnan(theirs[name]))
        ok = ~np.isnan(theirs[name])
        np.testing.assert_allclose(ours[name][ok], theirs[name][ok], rtol=1e-6)
    check_round_trip(graph, model)
