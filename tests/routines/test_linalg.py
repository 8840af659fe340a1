"""Gemm and MatMul through SGEMM against the reference (alpha, beta, transposes, C broadcasts,
fused activations, batched and broadcast MatMul), and through our AVX-512 GEMM where the weights
are constant and the CPU has AVX-512."""
import importlib
import importlib.util

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from onnx import helper

import workbench
from onnx_helpers import assert_matches_onnxruntime, make_model
from routine_helpers import assert_routine_matches, parallel_even_when_small
from workbench import routines

SETTINGS = settings(deadline=None, derandomize=True, max_examples=20)
BLAS = "cpu:float32:nchw/blas"
GEMM512 = "cpu:float32:nchw/gemm_avx512"
HAVE_512 = importlib.util.find_spec("workbench._kernels.gemm512_avx512") is not None


def _also_gemm512(g, op, expected):
    """The AVX-512 routine applies exactly where ``expected`` (and the CPU runs it), and matches."""
    from workbench.runtime import cpu
    layer = next(iter(g))
    runnable = expected and cpu.supports("avx512") and HAVE_512
    assert routines.get(op, GEMM512).applies(layer, g.input_specs(layer)) == runnable
    if runnable:
        assert_routine_matches(g, GEMM512)
ACTS = [None, "Relu", "HardSwish", "Sigmoid", "PRelu-uniform", "PRelu"]


@pytest.fixture(autouse=True, scope="module")
def _parallel_even_when_small():
    with parallel_even_when_small("linalg"):
        yield


def _load(nodes, inputs, inits=()):
    return workbench.load(make_model(nodes, inputs, [("y", None)], initializers=inits).SerializeToString())


def _with_act(nodes, inits, act, n, src="t"):
    if act is None:
        nodes[-1].output[0] = "y"
        return nodes, inits
    if act.startswith("PRelu"):
        slope = np.full(n, 0.2, np.float32) if act == "PRelu-uniform" else np.linspace(0.1, 0.9, n, dtype=np.float32)
        return nodes + [helper.make_node("PRelu", [src, "s"], ["y"])], inits + [("s", slope)]
    return nodes + [helper.make_node(act, [src], ["y"])], inits


@SETTINGS
@given(st.integers(1, 5), st.integers(1, 40), st.integers(1, 30), st.booleans(), st.booleans(),
       st.sampled_from([None, "n", "1n", "mn", "m1", "1"]), st.sampled_from([1.0, 0.5]), st.sampled_from([1.0, -2.0]),
       st.sampled_from(ACTS))
def test_gemm(m, k, n, trans_a, trans_b, c_shape, alpha, beta, act):
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    inits, names = [("B", b)], ["A", "B"]
    if c_shape:
        shape = {"n": (n,), "1n": (1, n), "mn": (m, n), "m1": (m, 1), "1": (1,)}[c_shape]
        inits.append(("C", rng.standard_normal(shape).astype(np.float32)))
        names.append("C")
    nodes = [helper.make_node("Gemm", names, ["t"], alpha=alpha, beta=beta, transA=int(trans_a), transB=int(trans_b))]
    nodes, inits = _with_act(nodes, inits, act, n)
    g = _load(nodes, [("A", [k, m] if trans_a else [m, k])], inits)
    assert [layer.op for layer in g] == ["Gemm"]
    assert_routine_matches(g, BLAS)
    per_column = c_shape in (None, "n", "1n", "1") or (c_shape == "m1" and m == 1) or (c_shape == "mn" and m == 1)
    _also_gemm512(g, "Gemm", not trans_a and per_column)


MATMUL_SHAPES = [((3, 7), (7, 5)), ((2, 3, 7), (7, 5)), ((7,), (7, 5)), ((3, 7), (7,)), ((2, 3, 7), (2, 7, 4)),
                 ((1, 3, 7), (4, 7, 2)), ((4, 3, 7), (1, 7, 2)), ((3, 7), (2, 7, 5)), ((6,), (6,)), ((1, 5), (5, 1))]


@SETTINGS
@given(st.sampled_from(MATMUL_SHAPES), st.booleans(), st.sampled_from(ACTS))
def test_matmul(shapes, const_b, act):
    a_shape, b_shape = shapes
    rng = np.random.default_rng(len(a_shape) * 10 + len(b_shape))
    inputs, inits = [("A", list(a_shape))], []
    if const_b:
        inits.append(("B", rng.standard_normal(b_shape).astype(np.float32)))
    else:
        inputs.append(("B", list(b_shape)))
    n = b_shape[-1] if len(b_shape) > 1 else 1
    nodes, inits = _with_act([helper.make_node("MatMul", ["A", "B"], ["t"])], inits, act, n)
    g = _load(nodes, inputs, inits)
    layer = next(iter(g))
    out_rank = len(layer.out_specs[0].shape)
    applies = routines.get("MatMul", BLAS).applies(layer, g.input_specs(layer))
    if [l.op for l in g] != ["MatMul"]:
        return  # the activation did not fuse (e.g. PRelu on a rank-1 output)
    assert applies == (act != "PRelu" or n == 1 or out_rank == 2)
    if applies:
        assert_routine_matches(g, BLAS)
        _also_gemm512(g, "MatMul", const_b and len(b_shape) == 2 and len(a_shape) >= 2)


ATTENTION_SHAPES = [((2, 3, 5, 7), (2, 3, 7, 4)), ((1, 3, 5, 7), (2, 1, 7, 4)), ((2, 3, 5, 7), (7, 4)),
                    ((3, 5, 7), (2, 3, 7, 4)), ((2, 1, 5, 7), (1, 3, 7, 6)), ((1, 4, 9, 2), (1, 4, 2, 9)),
                    ((2, 2, 2, 3, 5), (2, 1, 5, 3)), ((4, 1, 7), (4, 7, 1))]


@SETTINGS
@given(st.sampled_from(ATTENTION_SHAPES), st.booleans(), st.sampled_from([None, "Relu", "Sigmoid"]),
       st.sampled_from([1, 2, 3]))
def test_batched_matmul_any_rank(shapes, const_b, act, threads):
    """(B, H, M, K) @ (B, H, K, N) with broadcast batch dimensions, as attention blocks write it."""
    a_shape, b_shape = shapes
    rng = np.random.default_rng(sum(a_shape) + 7 * sum(b_shape))
    inputs, inits = [("A", list(a_shape))], []
    if const_b:
        inits.append(("B", rng.standard_normal(b_shape).astype(np.float32)))
    else:
        inputs.append(("B", list(b_shape)))
    nodes, inits = _with_act([helper.make_node("MatMul", ["A", "B"], ["t"])], inits, act, b_shape[-1])
    g = _load(nodes, inputs, inits)
    assert [layer.op for layer in g] == ["MatMul"]
    assert_routine_matches(g, BLAS, num_threads=threads)


def test_matmul_nan_and_inf_propagate():
    from routine_helpers import run_with_routine
    g = _load([helper.make_node("MatMul", ["A", "B"], ["y"])], [("A", [2, 3, 4, 5]), ("B", [2, 3, 5, 6])])
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    b = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
    a[0, 1, 2, 3] = np.nan
    b[1, 2, 0, 4] = np.inf
    ours, ref, used = run_with_routine(g, BLAS, feeds={"A": a, "B": b})
    assert used
    np.testing.assert_array_equal(np.isnan(ours["y"]), np.isnan(ref["y"]))
    np.testing.assert_array_equal(np.isinf(ours["y"]), np.isinf(ref["y"]))
    assert np.isnan(ours["y"]).any() and np.isinf(ours["y"]).any()
    finite = np.isfinite(ref["y"])
    np.testing.assert_allclose(ours["y"][finite], ref["y"][finite], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("c_shape, beta, applies", [((4,), 1.0, True), ((1, 4), 1.0, True), ((2, 4), 1.0, True),
                                                    ((2, 1), 1.0, False), ((4,), 0.5, False)])
def test_gemm_run_time_b_and_c(c_shape, beta, applies):
    g = _load([helper.make_node("Gemm", ["A", "B", "C"], ["y"], beta=beta)],
              [("A", [2, 3]), ("B", [3, 4]), ("C", list(c_shape))])
    layer = next(iter(g))
    assert routines.get("Gemm", BLAS).applies(layer, g.input_specs(layer)) == applies
    if applies:
        assert_routine_matches(g, BLAS)


def test_kernel_twins_check_shapes():
    from workbench._kernels import linalg as k
    a, b = np.ones((3, 4), np.float32), np.ones((4, 5), np.float32)
    out = np.empty((3, 5), np.float32)
    k.gemm(a, b, out, False, False)
    np.testing.assert_allclose(out, 4)
    with pytest.raises(ValueError, match="inner"):
        k.gemm(a, b, out, False, True)
    with pytest.raises(ValueError, match="shape"):
        k.gemm(a, b, np.empty((3, 4), np.float32), False, False)
    with pytest.raises(ValueError, match="bias"):
        k.gemm(a, b, out, False, False, bias=np.ones(4, np.float32))
    with pytest.raises(ValueError, match="slope"):
        k.gemm(a, b, out, False, False, act=7)
    with pytest.raises(TypeError, match="float32"):
        k.gemm(a.astype(np.float64), b, out, False, False)
    with pytest.raises(ValueError, match="2-D"):
        k.gemm(np.ones(4, np.float32), b, out, False, False)
    offs = np.zeros(2, np.int64)
    k.batched_matmul(a, b, np.empty(30, np.float32), offs, offs, 3, 5, 4)
    with pytest.raises(ValueError, match="reach outside"):
        k.batched_matmul(a, b, np.empty(30, np.float32), offs + 1, offs, 3, 5, 4)
    with pytest.raises(TypeError, match="int64"):
        k.batched_matmul(a, b, np.empty(30, np.float32), offs.astype(np.int32), offs, 3, 5, 4)
    with pytest.raises(ValueError, match="elements"):
        k.batched_matmul(a, b, np.empty(29, np.float32), offs, offs, 3, 5, 4)


def test_gemm512_takes_the_recogniser_classifier():
    """PP-OCR's last MatMul, (1, 40, 120) @ (120, 6625): the shape the AVX-512 routine is for."""
    rng = np.random.default_rng(2)
    g = _load([helper.make_node("MatMul", ["A", "B"], ["y"])], [("A", [1, 40, 120])],
              [("B", rng.standard_normal((120, 6625)).astype(np.float32))])
    _also_gemm512(g, "MatMul", True)


BIAS_CASES = [((1, 40, 120), (120, 300), (300,)), ((2, 5, 7), (7, 9), (1, 1, 9)), ((3, 7), (7, 5), (5,)),
              ((2, 3, 4, 7), (7, 6), (1, 6)), ((1, 40, 12), (12, 33), (1,))]


@SETTINGS
@given(st.sampled_from(BIAS_CASES), st.booleans(), st.sampled_from([None, "Relu", "Sigmoid", "Silu"]),
       st.sampled_from([1, 2]))
def test_matmul_with_fused_bias(case, bias_first, act, threads):
    """MatMul then Add of a bias along the last axis, as exporters write a linear layer: one MatMul
    layer (the Add's activation with it, except SiLU, which stays on the Add), and every MatMul
    routine that applies matches ONNX Runtime."""
    a_shape, b_shape, c_shape = case
    rng = np.random.default_rng(sum(a_shape) + len(c_shape))
    inits = [("B", rng.standard_normal(b_shape).astype(np.float32)),
             ("C", rng.standard_normal(c_shape).astype(np.float32))]
    nodes = [helper.make_node("MatMul", ["A", "B"], ["t"]),
             helper.make_node("Add", ["C", "t"] if bias_first else ["t", "C"], ["u"])]
    if act == "Silu":
        nodes += [helper.make_node("Sigmoid", ["u"], ["s"]), helper.make_node("Mul", ["u", "s"], ["y"])]
    else:
        nodes, inits = _with_act(nodes, inits, act, b_shape[-1], src="u")
        if act is None:
            nodes[-1].output[0] = "y"
    model = make_model(nodes, [("A", list(a_shape))], [("y", None)], initializers=inits)
    assert_matches_onnxruntime(model)
    g = workbench.load(model.SerializeToString())
    ops_left = [l.op for l in g]
    mm = next(l for l in g if l.op == "MatMul")
    assert ops_left == (["MatMul", "Add"] if act == "Silu" else ["MatMul"])
    assert (2 in mm.consts) == (act != "Silu")
    assert mm.attrs.get("activation") == (None if act == "Silu" else act)
    if act != "Silu":
        assert mm.attrs["fusion"] == "bias" and mm.consts[2].shape == (b_shape[-1],)
        assert_routine_matches(g, BLAS, num_threads=threads)
        _also_gemm512(g, "MatMul", True)


@pytest.mark.parametrize("what", ["other_axis", "two_readers", "runtime_b", "graph_output"])
def test_matmul_bias_not_fused_where_it_would_change_the_result(what):
    """An Add that is not a per-column bias of the product alone stays a layer of its own."""
    rng = np.random.default_rng(5)
    b = rng.standard_normal((7, 5)).astype(np.float32)
    c = rng.standard_normal((3, 1) if what == "other_axis" else (5,)).astype(np.float32)
    inputs, inits = [("A", [2, 3, 7])], [("C", c)]
    if what == "runtime_b":
        inputs.append(("B", [7, 5]))
    else:
        inits.append(("B", b))
    nodes = [helper.make_node("MatMul", ["A", "B"], ["t"]), helper.make_node("Add", ["t", "C"], ["u"])]
    outputs = [("u", None)]
    if what == "two_readers":
        nodes.append(helper.make_node("Relu", ["t"], ["r"]))
        outputs.append(("r", None))
    if what == "graph_output":
        outputs.append(("t", None))
    model = make_model(nodes, inputs, outputs, initializers=inits)
    assert_matches_onnxruntime(model)
    g = workbench.load(model.SerializeToString())
    assert "Add" in [l.op for l in g] and all(2 not in l.consts for l in g if l.op == "MatMul")
