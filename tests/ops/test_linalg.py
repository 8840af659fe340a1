"""Gemm, MatMul, Softmax and LogSoftmax against ONNX Runtime."""
import numpy as np
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp
from onnx import helper

from _onnx_case import cases, model, randn, run_case


@st.composite
def gemm_case(draw):
    m, k, n = draw(st.integers(1, 7)), draw(st.integers(1, 7)), draw(st.integers(1, 7))
    c_shape = draw(st.sampled_from([None, (), (1,), (n,), (1, n), (m, 1), (m, n)]))
    return dict(m=m, k=k, n=n, c_shape=c_shape, transA=draw(st.integers(0, 1)), transB=draw(st.integers(0, 1)),
                alpha=draw(st.sampled_from([None, 1.0, 0.5, -1.75])), beta=draw(st.sampled_from([None, 1.0, 0.0, 2.5])),
                b_const=draw(st.booleans()), opset=draw(st.sampled_from([11, 13])), seed=draw(st.integers(0, 2 ** 16)))


@cases(60)
@given(gemm_case())
def test_gemm(p):
    rng = np.random.default_rng(p["seed"])
    m, k, n = p["m"], p["k"], p["n"]
    a = randn(rng, (k, m) if p["transA"] else (m, k))
    b = randn(rng, (n, k) if p["transB"] else (k, n))
    feeds, inits = {"a": a}, {}
    (inits if p["b_const"] else feeds)["b"] = b
    inputs = ["a", "b"]
    if p["c_shape"] is not None:
        inits["c"] = randn(rng, p["c_shape"])
        inputs.append("c")
    attrs = {key: p[key] for key in ("transA", "transB", "alpha", "beta") if p[key]}
    node = helper.make_node("Gemm", inputs, ["y"], **attrs)
    run_case(model(node, feeds, ["y"], inits, opset=p["opset"]), feeds, expect="Gemm")


@cases(30)
@given(gemm_case(), st.sampled_from([None, "Relu", "Sigmoid"]))
def test_gemm_batchnorm_folded(p, act):
    """Gemm -> BatchNormalization [-> activation]: the BN folds into the weights and bias."""
    rng = np.random.default_rng(p["seed"])
    m, k, n = p["m"], p["k"], p["n"]
    a = randn(rng, (k, m) if p["transA"] else (m, k))
    inits = {"b": randn(rng, (n, k) if p["transB"] else (k, n)), "scale": randn(rng, [n]), "bias": randn(rng, [n]),
             "mean": randn(rng, [n]), "var": rng.uniform(0.3, 2, n).astype(np.float32)}
    inputs = ["a", "b"]
    if p["c_shape"] is not None:
        inits["c"] = randn(rng, p["c_shape"])
        inputs.append("c")
    attrs = {key: p[key] for key in ("transA", "transB", "alpha", "beta") if p[key]}
    nodes = [helper.make_node("Gemm", inputs, ["t"], name="gemm", **attrs),
             helper.make_node("BatchNormalization", ["t", "scale", "bias", "mean", "var"], ["u" if act else "y"])]
    if act:
        nodes.append(helper.make_node(act, ["u"], ["y"]))

    def fused(graph):
        assert [l.op for l in graph] == ["Gemm"], graph.op_counts()

    run_case(model(nodes, {"a": a}, ["y"], inits, opset=13), {"a": a}, expect=("Gemm", "BatchNormalization"),
             check_fused=fused)


@cases(60)
@given(hnp.mutually_broadcastable_shapes(signature=np.matmul.signature, max_dims=3, max_side=6),
       st.sampled_from(["float32", "float32", "float64", "int32", "int64"]), st.sampled_from([None, "a", "b"]),
       st.integers(0, 2 ** 16))
def test_matmul(shapes, dtype, const, seed):
    """1-D operands, 2-D, and batched with broadcasting; either operand constant."""
    rng = np.random.default_rng(seed)
    sa, sb = shapes.input_shapes
    a, b = ((randn(rng, s) if dtype.startswith("float") else rng.integers(-5, 6, s)).astype(dtype) for s in (sa, sb))
    feeds, inits = {}, {}
    (inits if const == "a" else feeds)["a"] = a
    (inits if const == "b" else feeds)["b"] = b
    run_case(model(helper.make_node("MatMul", ["a", "b"], ["y"]), feeds, ["y"], inits, opset=13), feeds,
             expect="MatMul")


@cases(60)
@given(st.sampled_from(["Softmax", "LogSoftmax"]), hnp.array_shapes(min_dims=1, max_dims=4, max_side=6),
       st.sampled_from([1, 11, 13]), st.data())
def test_softmax(op, shape, opset, data):
    """Before opset 13 the input is coerced to 2-D at ``axis`` (default 1); from 13 on it is per axis (default -1)."""
    rank = len(shape)
    axis = data.draw(st.one_of(st.none(), st.integers(-rank, rank - 1)))
    if opset < 13 and axis is None and rank < 2:
        axis = 0  # the default axis 1 needs rank >= 2
    x = randn(np.random.default_rng(data.draw(st.integers(0, 2 ** 16))), shape) * np.float32(4)
    attrs = {} if axis is None else {"axis": axis}
    m = model(helper.make_node(op, ["x"], ["y"], **attrs), {"x": x}, ["y"], opset=opset)
    run_case(m, {"x": x}, expect=op)
