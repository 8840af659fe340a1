"""The LayerNormalization kernel routine against the NumPy reference and ONNX Runtime: any axis,
with and without bias, scale/bias broadcast over the normalized axes, the parallel path, refusals."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import workbench
from onnx import helper
from onnx_helpers import assert_matches_onnxruntime, make_model
from routine_helpers import assert_routine_matches
from workbench.runtime import cpu

ROUTINE = "cpu:float32:nchw/direct"
SETTINGS = dict(deadline=None, derandomize=True, database=None)
k = cpu.kernel_module("layernorm")


def ln_model(shape, axis, scale_shape, bias, seed, eps=1e-5):
    rng = np.random.default_rng(seed)
    inits = [("s", rng.standard_normal(scale_shape).astype(np.float32))]
    ins = ["x", "s"]
    if bias:
        inits.append(("b", rng.standard_normal(scale_shape).astype(np.float32)))
        ins.append("b")
    nodes = [helper.make_node("LayerNormalization", ins, ["y"], axis=axis, epsilon=eps)]
    return make_model(nodes, [("x", list(shape))], [("y", None)], inits, opset=17)


@st.composite
def cases(draw):
    rank = draw(st.integers(1, 4))
    shape = [draw(st.integers(1, 9)) for _ in range(rank)]
    axis = draw(st.integers(-rank, rank - 1))
    tail = shape[axis % rank:]
    # scale/bias as ONNX allows them: the normalized shape, or broadcastable to it
    scale_shape = [d if draw(st.booleans()) else 1 for d in tail][draw(st.integers(0, len(tail))):]
    return dict(shape=shape, axis=axis, scale_shape=scale_shape, bias=draw(st.booleans()),
                seed=draw(st.integers(0, 2 ** 16)))


@settings(max_examples=40, **SETTINGS)
@given(cases(), st.sampled_from([1, 2]))
def test_matches_reference_and_onnxruntime(p, threads):
    model = ln_model(p["shape"], p["axis"], p["scale_shape"], p["bias"], p["seed"])
    graph, _ = assert_matches_onnxruntime(model)
    assert_routine_matches(graph, ROUTINE, expect_layers=[l.name for l in graph], num_threads=threads, seed=p["seed"])


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_parallel_rows_match_numpy(threads):
    """Enough rows for the pool (GRAIN lowered), wide rows, large offsets (the mean removed first)."""
    rng = np.random.default_rng(threads)
    x = (rng.standard_normal((301, 257)) * 3 + 1000).astype(np.float32)
    s, b = rng.standard_normal(257).astype(np.float32), rng.standard_normal(257).astype(np.float32)
    old = k.set_grain(1)
    try:
        y = k.layernorm(x, np.empty_like(x), 301, 257, s, b, 1e-5, threads)
        bound = np.empty_like(x)
        k.LayerNorm(x, bound, 301, 257, s, b, 1e-5)(threads)
    finally:
        k.set_grain(old)
    x64 = x.astype(np.float64)
    want = (x64 - x64.mean(1, keepdims=True)) / np.sqrt(x64.var(1, keepdims=True) + 1e-5) * s + b
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(bound, y)


def test_refusals():
    x = np.zeros((4, 6), np.float32)
    with pytest.raises(ValueError, match="scale has 5 elements"):
        k.layernorm(x, x, 4, 6, np.ones(5, np.float32))
    with pytest.raises(TypeError, match="float32"):
        k.layernorm(x.astype(np.float64), x, 4, 6, np.ones(6, np.float32))
    with pytest.raises(ValueError, match="y has 24 elements, expected 30"):
        k.LayerNorm(np.zeros(30, np.float32), x, 5, 6, np.ones(6, np.float32))
