"""Elementwise ops against ONNX Runtime: arithmetic with NumPy broadcasting (constants on either
side), variadic Max/Min/Sum/Mean, comparisons and logic, Where, unary math, Cast, Identity, Dropout."""
import numpy as np
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp
from onnx import helper

from _onnx_case import cases, model, randn, run_case

SHAPES = hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=6)


def _operand(rng, shape, dtype, nonzero=False, positive=False):
    if np.dtype(dtype).kind == "f":
        a = rng.standard_normal(shape) * 2
        if positive:
            a = np.abs(a) + 0.1
        elif nonzero:
            a = np.where(np.abs(a) < 0.25, 0.5, a)
    else:
        a = rng.integers(-9, 10, shape)
        if nonzero:
            a = np.where(a == 0, 3, a)
    return np.asarray(a).astype(dtype)


def _binary_model(op, a, b, const, opset, attrs=None):
    """``op(a, b)``; ``const`` says which operand (if any) is an initializer."""
    feeds, inits = {}, {}
    (inits if const == "a" else feeds)["a"] = a
    (inits if const == "b" else feeds)["b"] = b
    node = helper.make_node(op, ["a", "b"], ["y"], **(attrs or {}))
    return model(node, feeds, ["y"], inits, opset=opset), feeds


@cases(80)
@given(st.sampled_from(["Add", "Sub", "Mul", "Div"]), hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=4, max_side=5),
       st.sampled_from(["float32", "float32", "int32", "int64", "float64"]), st.sampled_from([None, "a", "b"]),
       st.sampled_from([7, 13, 14]), st.integers(0, 2 ** 16))
def test_arithmetic(op, shapes, dtype, const, opset, seed):
    rng = np.random.default_rng(seed)
    a = _operand(rng, shapes.input_shapes[0], dtype)
    b = _operand(rng, shapes.input_shapes[1], dtype, nonzero=op == "Div")
    m, feeds = _binary_model(op, a, b, const, opset)
    run_case(m, feeds, expect=op)


@cases(40)
@given(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=4, max_side=5),
       st.sampled_from([("float32", "float32"), ("float32", "int64"), ("float32", "int32"), ("int64", "int64"),
                        ("int32", "int32"), ("float64", "float64")]),
       st.sampled_from([None, "a", "b"]), st.integers(0, 2 ** 16))
def test_pow(shapes, dtypes, const, seed):
    rng = np.random.default_rng(seed)
    ta, tb = dtypes
    a = _operand(rng, shapes.input_shapes[0], ta, positive=True) if ta.startswith("float") else \
        rng.integers(-4, 5, shapes.input_shapes[0]).astype(ta)
    b = (rng.uniform(-2.5, 2.5, shapes.input_shapes[1]).astype(tb) if tb.startswith("float")
         else rng.integers(0 if ta.startswith("int") else -3, 4, shapes.input_shapes[1]).astype(tb))
    m, feeds = _binary_model("Pow", a, b, const, 15)
    run_case(m, feeds, expect="Pow")


@cases(30)
@given(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=5), st.integers(0, 1),
       st.sampled_from(["int32", "int64", "float32"]), st.integers(0, 2 ** 16))
def test_mod(shapes, fmod, dtype, seed):
    if dtype == "float32":
        fmod = 1  # ONNX requires fmod=1 for floats
    rng = np.random.default_rng(seed)
    a = _operand(rng, shapes.input_shapes[0], dtype) * (7 if dtype != "float32" else 1)
    b = _operand(rng, shapes.input_shapes[1], dtype, nonzero=True)
    m, feeds = _binary_model("Mod", a.astype(dtype), b, "b", 13, {"fmod": fmod})
    run_case(m, feeds, expect="Mod")


@cases(40)
@given(st.sampled_from(["Max", "Min", "Sum", "Mean"]), hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=4, max_side=5),
       st.integers(1, 3), st.sampled_from(["float32", "int64"]), st.booleans(), st.integers(0, 2 ** 16))
def test_variadic(op, shapes, n, dtype, with_const, seed):
    if op in ("Sum", "Mean"):
        dtype = "float32"
    rng = np.random.default_rng(seed)
    arrays = {f"x{i}": _operand(rng, s, dtype) for i, s in enumerate(shapes.input_shapes[:n])}
    inits = {}
    if with_const and n > 1:
        inits["x0"] = arrays.pop("x0")
    node = helper.make_node(op, [f"x{i}" for i in range(n)], ["y"])
    run_case(model(node, arrays, ["y"], inits, opset=13), arrays, expect=op)


@cases(50)
@given(st.sampled_from(["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"]),
       hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=4, max_side=5),
       st.sampled_from(["float32", "int64", "int32"]), st.sampled_from([None, "a", "b"]), st.integers(0, 2 ** 16))
def test_compare(op, shapes, dtype, const, seed):
    rng = np.random.default_rng(seed)
    # Small integers (also as floats) so that equal pairs occur.
    a, b = (rng.integers(-2, 3, s).astype(dtype) for s in shapes.input_shapes)
    m, feeds = _binary_model(op, a, b, const, 16)
    run_case(m, feeds, expect=op)


@cases(30)
@given(st.sampled_from(["And", "Or", "Xor"]), hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=4, max_side=5),
       st.sampled_from([None, "b"]), st.integers(0, 2 ** 16))
def test_logic(op, shapes, const, seed):
    rng = np.random.default_rng(seed)
    a, b = (rng.integers(0, 2, s).astype(bool) for s in shapes.input_shapes)
    m, feeds = _binary_model(op, a, b, const, 7)
    run_case(m, feeds, expect=op)


@cases(15)
@given(SHAPES, st.integers(0, 2 ** 16))
def test_not(shape, seed):
    x = np.random.default_rng(seed).integers(0, 2, shape).astype(bool)
    run_case(model(helper.make_node("Not", ["x"], ["y"]), {"x": x}, ["y"], opset=1), {"x": x}, expect="Not")


@cases(30)
@given(hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=4, max_side=5), st.sampled_from(["float32", "int64"]),
       st.sampled_from([None, "x", "y"]), st.integers(0, 2 ** 16))
def test_where(shapes, dtype, const, seed):
    rng = np.random.default_rng(seed)
    c = rng.integers(0, 2, shapes.input_shapes[0]).astype(bool)
    x, y = (_operand(rng, s, dtype) for s in shapes.input_shapes[1:])
    feeds, inits = {"c": c}, {}
    (inits if const == "x" else feeds)["x"] = x
    (inits if const == "y" else feeds)["y"] = y
    m = model(helper.make_node("Where", ["c", "x", "y"], ["out"]), feeds, ["out"], inits, opset=16)
    run_case(m, feeds, expect="Where")


# (op, domain of the input: "any" / "positive" / "unit", dtypes, opset)
UNARY = [
    ("Sqrt", "positive", ["float32", "float64"], 13), ("Exp", "any", ["float32", "float64"], 13),
    ("Log", "positive", ["float32"], 13), ("Neg", "any", ["float32", "int64", "int32"], 13),
    ("Abs", "any", ["float32", "int64", "int32"], 13), ("Floor", "any", ["float32"], 13),
    ("Ceil", "any", ["float32"], 13), ("Round", "halves", ["float32"], 11), ("Sin", "any", ["float32"], 7),
    ("Cos", "any", ["float32"], 7), ("Erf", "any", ["float32"], 13), ("Sign", "any", ["float32", "int64"], 13),
    ("Reciprocal", "nonzero", ["float32"], 13), ("Identity", "any", ["float32", "int64", "bool"], 16),
]


@cases(70)
@given(st.sampled_from(UNARY), SHAPES, st.data())
def test_unary(case, shape, data):
    op, domain, dtypes, opset = case
    dtype = data.draw(st.sampled_from(dtypes))
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16)))
    if dtype == "bool":
        x = rng.integers(0, 2, shape).astype(bool)
    elif domain == "halves":  # Round: exact halves round to even
        x = (rng.integers(-10, 11, shape) / 2 + rng.choice([0, 0.1, -0.2], shape)).astype(dtype)
    else:
        x = _operand(rng, shape, dtype, nonzero=domain == "nonzero", positive=domain == "positive")
    m = model(helper.make_node(op, ["x"], ["y"]), {"x": x}, ["y"], opset=opset)
    run_case(m, {"x": x}, expect=op)


CASTS = ["float32", "float64", "float16", "int32", "int64", "int8", "uint8", "bool"]


@cases(50)
@given(st.sampled_from(CASTS), st.sampled_from(CASTS), SHAPES, st.sampled_from([9, 13, 19]), st.integers(0, 2 ** 16))
def test_cast(src, dst, shape, opset, seed):
    rng = np.random.default_rng(seed)
    if src == "bool":
        x = rng.integers(0, 2, shape).astype(bool)
    elif src == "uint8" or dst == "uint8":
        x = rng.uniform(0, 200, shape).astype(src)  # in range of every type involved
    else:
        x = np.clip(rng.standard_normal(shape) * 40, -120, 120).astype(src)  # int8's range
    to = helper.np_dtype_to_tensor_dtype(np.dtype(dst))
    m = model(helper.make_node("Cast", ["x"], ["y"], to=to), {"x": x}, ["y"], opset=opset)
    run_case(m, {"x": x}, expect="Cast")


@cases(20)
@given(st.sampled_from(CASTS[:6]), st.sampled_from(CASTS[:6]), SHAPES, st.integers(0, 2 ** 16))
def test_cast_like(src, dst, shape, seed):
    rng = np.random.default_rng(seed)
    x = np.clip(rng.standard_normal(shape) * 40, -120, 120).astype(src)
    like = np.zeros((2,), dst)
    m = model(helper.make_node("CastLike", ["x", "like"], ["y"]), {"x": x}, ["y"], {"like": like}, opset=15)
    run_case(m, {"x": x}, expect="CastLike")


@cases(30)
@given(SHAPES, st.sampled_from([7, 10, 12, 13]), st.booleans(), st.booleans(), st.integers(0, 2 ** 16))
def test_dropout_and_identity(shape, opset, with_ratio, with_mask, seed):
    """Inference Dropout is the identity (its mask all true); it sits between two real layers."""
    x = randn(np.random.default_rng(seed), shape)
    inits = {}
    if opset >= 12 and with_ratio:
        inits["ratio"] = np.array(0.3, np.float32)
        inputs = ["t", "ratio"]
    else:
        inputs = ["t"]
    attrs = {"ratio": 0.3} if opset < 12 and with_ratio else {}
    outputs = ["d", "mask"] if with_mask and opset >= 10 else ["d"]
    nodes = [helper.make_node("Relu", ["x"], ["t"]), helper.make_node("Dropout", inputs, outputs, **attrs),
             helper.make_node("Identity", ["d"], ["i"]), helper.make_node("Neg", ["i"], ["y"])]
    m = model(nodes, {"x": x}, ["y"] + outputs[1:], inits, opset=opset)

    def fused(graph):
        assert "Identity" not in graph.op_counts()
        assert ("Dropout" in graph.op_counts()) == (len(outputs) > 1)  # only a read mask keeps it

    run_case(m, {"x": x}, expect=("Dropout", "Identity"), check_fused=fused)


@cases(10)
@given(SHAPES, st.integers(0, 2 ** 16))
def test_identity_as_graph_output(shape, seed):
    x = randn(np.random.default_rng(seed), shape)
    nodes = [helper.make_node("Neg", ["x"], ["t"]), helper.make_node("Identity", ["t"], ["y"])]
    run_case(model(nodes, {"x": x}, ["y"], opset=16), {"x": x}, expect="Identity")
