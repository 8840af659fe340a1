"""Activation ops against ONNX Runtime: standalone, and fused into a Gemm/MatMul/Add epilogue."""
import numpy as np
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp
from onnx import helper

from _onnx_case import cases, model, randn, run_case

SHAPES = hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=7)

# (op, attrs, opset)
UNARY = [
    ("Relu", {}, 14), ("LeakyRelu", {}, 16), ("LeakyRelu", {"alpha": 0.23}, 16), ("Sigmoid", {}, 13),
    ("HardSigmoid", {}, 6), ("HardSigmoid", {"alpha": 0.31, "beta": 0.4}, 6), ("HardSwish", {}, 14),
    ("Tanh", {}, 13), ("Elu", {}, 6), ("Elu", {"alpha": 0.7}, 6), ("Selu", {}, 6),
    ("Selu", {"alpha": 1.2, "gamma": 0.9}, 6), ("Softplus", {}, 1), ("Softsign", {}, 1), ("Mish", {}, 18),
    ("Gelu", {}, 20), ("Gelu", {"approximate": "tanh"}, 20), ("Gelu", {"approximate": "none"}, 20),
]


@cases(80)
@given(st.sampled_from(UNARY), SHAPES, st.sampled_from([1.0, 4.0, 40.0]), st.integers(0, 2 ** 16))
def test_unary_activation(case, shape, scale, seed):
    op, attrs, opset = case
    x = randn(np.random.default_rng(seed), shape) * np.float32(scale)
    run_case(model(helper.make_node(op, ["x"], ["y"], **attrs), {"x": x}, ["y"], opset=opset), {"x": x}, expect=op)


@st.composite
def prelu_case(draw):
    shape = draw(hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=6))
    c = shape[1]
    # Slopes broadcast unidirectionally to x: per channel (C, 1, ..), one value, or a full tail.
    options = [(1,), (c,) + (1,) * (len(shape) - 2), shape[1:], shape[-1:]]
    return shape, draw(st.sampled_from(options)), draw(st.integers(0, 2 ** 16))


@cases(40)
@given(prelu_case(), st.sampled_from([9, 16]))
def test_prelu(case, opset):
    shape, slope_shape, seed = case
    rng = np.random.default_rng(seed)
    x, slope = randn(rng, shape), randn(rng, slope_shape)
    m = model(helper.make_node("PRelu", ["x", "slope"], ["y"]), {"x": x}, ["y"], {"slope": slope}, opset=opset)
    run_case(m, {"x": x}, expect="PRelu")


@cases(25)
@given(prelu_case())
def test_prelu_slope_as_input(case):
    """A slope computed at run time (not a weight) still works as a broadcasting operand."""
    shape, slope_shape, seed = case
    rng = np.random.default_rng(seed)
    x, slope = randn(rng, shape), randn(rng, slope_shape)
    m = model(helper.make_node("PRelu", ["x", "slope"], ["y"]), {"x": x, "slope": slope}, ["y"], opset=16)
    run_case(m, {"x": x, "slope": slope}, expect="PRelu")


BOUND = st.one_of(st.none(), st.floats(-2, 2, width=32))


@cases(50)
@given(SHAPES, BOUND, BOUND, st.sampled_from([11, 12, 13]), st.sampled_from(["float32", "int32", "int64"]),
       st.integers(0, 2 ** 16))
def test_clip_inputs(shape, lo, hi, opset, dtype, seed):
    """Clip since opset 11: min and max are optional inputs (min only, max only, both, neither)."""
    if dtype != "float32" and opset < 12:
        opset = 12  # integer Clip came with opset 12
    rng = np.random.default_rng(seed)
    x = (randn(rng, shape) * 3).astype(dtype)
    inits, inputs = {}, ["x"]
    if lo is not None:
        inits["lo"] = np.array(lo * (3 if dtype != "float32" else 1)).astype(dtype)
    if hi is not None:
        inits["hi"] = np.array(hi * (3 if dtype != "float32" else 1)).astype(dtype)
    inputs += ["lo" if lo is not None else "", "hi" if hi is not None else ""]
    while inputs[-1] == "":
        inputs.pop()
    m = model(helper.make_node("Clip", inputs, ["y"]), {"x": x}, ["y"], inits, opset=opset)
    run_case(m, {"x": x}, expect="Clip")


@cases(25)
@given(SHAPES, BOUND, BOUND, st.sampled_from([6, 10]), st.integers(0, 2 ** 16))
def test_clip_attributes(shape, lo, hi, opset, seed):
    """Clip before opset 11: min and max are attributes."""
    x = randn(np.random.default_rng(seed), shape) * np.float32(3)
    attrs = {k: v for k, v in (("min", lo), ("max", hi)) if v is not None}
    m = model(helper.make_node("Clip", ["x"], ["y"], **attrs), {"x": x}, ["y"], opset=opset)
    run_case(m, {"x": x}, expect="Clip")


FUSABLE = [("Relu", {}), ("LeakyRelu", {"alpha": 0.05}), ("Sigmoid", {}), ("HardSigmoid", {"alpha": 0.25, "beta": 0.45}),
           ("HardSwish", {}), ("Tanh", {}), ("Clip", {}), ("PRelu", {})]


def _activation(op, attrs, src, dst, width, rng, inits):
    if op == "Clip":
        inits["lo"], inits["hi"] = np.float32(-0.3), np.float32(1.1)
        return helper.make_node("Clip", [src, "lo", "hi"], [dst])
    if op == "PRelu":
        inits["slope"] = randn(rng, [width])
        return helper.make_node("PRelu", [src, "slope"], [dst])
    return helper.make_node(op, [src], [dst], **attrs)


@cases(50)
@given(st.sampled_from(FUSABLE), st.sampled_from(["Gemm", "MatMul", "Add", "Sub", "Mul", "Div"]),
       st.integers(1, 5), st.integers(1, 7), st.integers(1, 6), st.integers(0, 2 ** 16))
def test_activation_fused_into_producer(act, producer, m, k, n, seed):
    """An activation after Gemm/MatMul/Add/Sub/Mul/Div moves into that layer's epilogue, same result."""
    rng = np.random.default_rng(seed)
    op, attrs = act
    inits = {}
    if producer in ("Gemm", "MatMul"):
        x = randn(rng, [m, k])
        inits["w"] = randn(rng, [k, n])
        if producer == "Gemm":
            inits["c"] = randn(rng, [n])
        first = helper.make_node(producer, ["x", "w"] + (["c"] if producer == "Gemm" else []), ["t"], name="p")
        feeds = {"x": x}
    else:
        x, x2 = randn(rng, [m, n]), randn(rng, [m, n])
        if producer == "Div":
            x2 = np.where(np.abs(x2) < 0.3, np.float32(1.5), x2)
        first = helper.make_node(producer, ["x", "x2"], ["t"], name="p")
        feeds = {"x": x, "x2": x2}
    nodes = [first, _activation(op, attrs, "t", "y", n, rng, inits)]

    def fused(graph):
        assert [l.op for l in graph] == [producer], graph.op_counts()
        assert graph.layer("p").attrs["activation"] == op

    run_case(model(nodes, feeds, ["y"], inits, opset=14), feeds, expect=(producer, op), check_fused=fused)
