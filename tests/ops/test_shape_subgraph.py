"""The shape-computing ops that import folds to constants (Shape, Size, ConstantOfShape, Range and
the Gather/Unsqueeze/Concat chains exporters write) against ONNX Runtime: each folded value feeds
a real layer (or is a graph output), so a wrong fold shows in the result."""
import numpy as np
from hypothesis import assume, given, strategies as st
from hypothesis.extra import numpy as hnp
from onnx import helper, numpy_helper

from _onnx_case import cases, model, randn, run_case

SHAPES = hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=6)
SEEDS = st.integers(0, 2 ** 16)
FOLDED = ("Shape", "Size", "ConstantOfShape", "Range")


def _no_folded_layers(graph):
    assert not set(graph.op_counts()) & set(FOLDED), graph.op_counts()


def _check(m, feeds, expect):
    _, graphs = run_case(m, feeds, expect=expect)
    for g in graphs.values():
        _no_folded_layers(g)


@cases(40)
@given(SHAPES, st.sampled_from([None, "float32", "int64", "int32"]), st.data())
def test_shape_constant_of_shape_add(shape, value_dtype, data):
    """x -> Shape[start:] -> ConstantOfShape(value) -> Add/Mul with x (a suffix broadcasts)."""
    rank = len(shape)
    start = data.draw(st.one_of(st.none(), st.integers(-rank, rank - 1)))
    dtype = value_dtype or "float32"
    x = randn(np.random.default_rng(data.draw(SEEDS)), shape).astype(dtype) if dtype == "float32" else \
        np.random.default_rng(0).integers(-9, 9, shape).astype(dtype)
    shape_attrs = {} if start is None else {"start": start}
    cos_attrs = {} if value_dtype is None else {
        "value": numpy_helper.from_array(np.array([data.draw(st.integers(-3, 3))], value_dtype))}
    op = data.draw(st.sampled_from(["Add", "Mul"]))
    nodes = [helper.make_node("Shape", ["x"], ["s"], **shape_attrs),
             helper.make_node("ConstantOfShape", ["s"], ["c"], **cos_attrs),
             helper.make_node(op, ["x", "c"], ["y"])]
    _check(model(nodes, {"x": x}, ["y"], opset=15), {"x": x}, expect=op)


@cases(30)
@given(SHAPES, st.data())
def test_shape_slice_as_output(shape, data):
    """Shape with start and end (opset 15), and Size, as folded graph outputs."""
    rank = len(shape)
    start = data.draw(st.integers(-rank - 1, rank + 1))
    end = data.draw(st.one_of(st.none(), st.integers(-rank - 1, rank + 1)))
    x = randn(np.random.default_rng(0), shape)
    attrs = {"start": start} | ({} if end is None else {"end": end})
    nodes = [helper.make_node("Shape", ["x"], ["s"], **attrs), helper.make_node("Size", ["x"], ["n"]),
             helper.make_node("Relu", ["x"], ["r"])]
    _check(model(nodes, {"x": x}, ["s", "n", "r"], opset=15), {"x": x}, expect="Relu")


@cases(30)
@given(hnp.array_shapes(min_dims=2, max_dims=4, max_side=5), st.sampled_from([11, 13]), SEEDS)
def test_exporter_flatten_chain(shape, opset, seed):
    """PyTorch's flatten: Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), [-1])), then Size * x."""
    x = randn(np.random.default_rng(seed), shape)
    inits = {"zero": np.array(0, np.int64), "minus1": np.array([-1], np.int64)}
    unsq = (helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]) if opset >= 13 else
            helper.make_node("Unsqueeze", ["n"], ["n1"], axes=[0]))
    if opset >= 13:
        inits["axes"] = np.array([0], np.int64)
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "zero"], ["n"], axis=0), unsq,
             helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
             helper.make_node("Reshape", ["x", "target"], ["flat"]),
             helper.make_node("Size", ["x"], ["size"]), helper.make_node("Cast", ["size"], ["fsize"], to=1),
             helper.make_node("Mul", ["flat", "fsize"], ["y"])]
    _check(model(nodes, {"x": x}, ["y"], inits, opset=opset), {"x": x}, expect=("Reshape", "Mul"))


@st.composite
def range_case(draw):
    dtype = draw(st.sampled_from(["float32", "int64", "int32"]))
    if dtype == "float32":
        start = draw(st.sampled_from([0.0, 0.1, -1.5, 2.25]))
        delta = draw(st.sampled_from([0.3, 0.5, 1.0, -0.7, -0.25]))
    else:
        start = draw(st.integers(-5, 5))
        delta = draw(st.sampled_from([1, 2, 3, -1, -2]))
    n = draw(st.integers(1, 8))
    limit = start + delta * (n - draw(st.sampled_from([0.0, 0.5, 0.9])) if dtype == "float32" else n - 1) + \
        (0 if dtype == "float32" else np.sign(delta))
    return dtype, start, limit, delta


@cases(40)
@given(range_case(), st.integers(1, 3), SEEDS)
def test_range_feeds_add(case, rows, seed):
    """Range(start, limit, delta) with constant inputs, added to an input of the matching length."""
    dtype, start, limit, delta = case
    n = max(int(np.ceil((np.float32(limit) - np.float32(start)) / np.float32(delta))), 0)
    if dtype != "float32":
        n = max(int(np.ceil((limit - start) / delta)), 0)
    assume(n > 0)
    inits = {k: np.array(v, dtype) for k, v in (("start", start), ("limit", limit), ("delta", delta))}
    rng = np.random.default_rng(seed)
    x = randn(rng, (rows, n)).astype(dtype) if dtype == "float32" else rng.integers(-9, 9, (rows, n)).astype(dtype)
    nodes = [helper.make_node("Range", ["start", "limit", "delta"], ["r"]), helper.make_node("Add", ["x", "r"], ["y"])]
    _check(model(nodes, {"x": x}, ["y"], inits, opset=11), {"x": x}, expect="Add")


@cases(20)
@given(SHAPES, SEEDS)
def test_range_from_shape_as_gather_indices(shape, seed):
    """Range(W - 1, -1, -1), with W from Shape(x), as Gather indices: x[..., ::-1]."""
    x = randn(np.random.default_rng(seed), shape)
    inits = {"last": np.array(-1, np.int64), "zero": np.array(0, np.int64), "one": np.array(1, np.int64),
             "big": np.array(shape[-1] - 1, np.int64), "minus1": np.array(-1, np.int64)}
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "last"], ["w"], axis=0),
             helper.make_node("Sub", ["big", "w"], ["start_m1"]),  # = -1
             helper.make_node("Range", ["big", "start_m1", "minus1"], ["idx"]),
             helper.make_node("Gather", ["x", "idx"], ["y"], axis=-1)]
    _check(model(nodes, {"x": x}, ["y"], inits, opset=13), {"x": x}, expect="Gather")
