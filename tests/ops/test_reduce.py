"""Reductions and ArgMax/ArgMin against ONNX Runtime: axes as attribute (before opset 18, 13 for
ReduceSum) and as input, negative axes, keepdims, absent/empty axes, noop_with_empty_axes."""
import numpy as np
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp
from onnx import helper

from _onnx_case import cases, model, randn, run_case

# op -> (opset where axes became an input, dtypes)
REDUCE = {"ReduceMean": (18, ["float32"]), "ReduceSum": (13, ["float32", "int64"]),
          "ReduceMax": (18, ["float32", "int64", "int32"]), "ReduceMin": (18, ["float32", "int64", "int32"]),
          "ReduceProd": (18, ["float32"]), "ReduceL2": (18, ["float32"]), "ReduceSumSquare": (18, ["float32"])}


@st.composite
def reduce_case(draw):
    op = draw(st.sampled_from(sorted(REDUCE)))
    since, dtypes = REDUCE[op]
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, max_side=5))
    rank = len(shape)
    axes = draw(st.one_of(st.none(), st.just([]),
                          st.lists(st.integers(0, rank - 1), min_size=1, max_size=rank, unique=True)))
    if axes:  # each axis positive or negative
        axes = [a - rank if draw(st.booleans()) else a for a in axes]
    return dict(op=op, shape=shape, axes=axes, dtype=draw(st.sampled_from(dtypes)),
                opset=draw(st.sampled_from([since - 1, since, 18] if since < 18 else [13, 18])),
                keepdims=draw(st.sampled_from([None, 0, 1])), noop=draw(st.sampled_from([None, 0, 1])),
                seed=draw(st.integers(0, 2 ** 16)))


@cases(120)
@given(reduce_case())
def test_reduce(p):
    op, since = p["op"], REDUCE[p["op"]][0]
    rng = np.random.default_rng(p["seed"])
    x = (randn(rng, p["shape"]) * 2).astype(p["dtype"]) if p["dtype"] == "float32" else \
        rng.integers(-20, 20, p["shape"]).astype(p["dtype"])
    if op == "ReduceProd":
        x = (np.sign(x) * (0.6 + np.abs(x) / 4)).astype(x.dtype)  # keep products of magnitude ~1
    attrs, inits, inputs = {}, {}, ["x"]
    if p["keepdims"] is not None:
        attrs["keepdims"] = p["keepdims"]
    if p["opset"] >= since:
        if p["noop"] is not None:
            attrs["noop_with_empty_axes"] = p["noop"]
        if p["axes"] is not None:
            inits["axes"] = np.array(p["axes"], np.int64)
            inputs.append("axes")
    elif p["axes"]:
        attrs["axes"] = p["axes"]
    m = model(helper.make_node(op, inputs, ["y"], **attrs), {"x": x}, ["y"], inits, opset=p["opset"])
    run_case(m, {"x": x}, expect=op)


@cases(40)
@given(st.sampled_from(["ArgMax", "ArgMin"]), hnp.array_shapes(min_dims=1, max_dims=4, max_side=6),
       st.sampled_from(["float32", "int64"]), st.sampled_from([None, 0, 1]), st.sampled_from([11, 13]), st.data())
def test_arg_reduce(op, shape, dtype, keepdims, opset, data):
    rank = len(shape)
    axis = data.draw(st.one_of(st.none(), st.integers(-rank, rank - 1)))
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16)))
    # Integers in a small range: ties, where the first index wins.
    x = randn(rng, shape) if dtype == "float32" else rng.integers(0, 3, shape).astype(dtype)
    attrs = {k: v for k, v in (("axis", axis), ("keepdims", keepdims)) if v is not None}
    m = model(helper.make_node(op, ["x"], ["y"], **attrs), {"x": x}, ["y"], opset=opset)
    run_case(m, {"x": x}, expect=op)
