"""The bfloat16 MatMul and Gemm routines (``cpu:bfloat16:nchw/gemm_bf16`` and its float32-in/out
forms) in whole graphs against the NumPy reference, within the bfloat16 tolerance
(``tuning.precision.tolerance``); what they refuse; NaN and infinity where the reference has them."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from onnx import helper

import workbench
from onnx_helpers import make_model
from routine_helpers import ACTIVATION_ATTRS, assert_routine_matches, run_with_routine
from workbench import routines
from workbench.runtime import cpu

NATIVE = cpu.kernel_module("gemm_bf16", "avx512bf16")
pytestmark = pytest.mark.skipif(NATIVE is None or not NATIVE.available, reason="this CPU lacks AVX512-BF16")
MATMUL = sorted(d for d, r in routines.routines_for("MatMul").items() if ":bfloat16:" in d and r.available())
GEMM = sorted(d for d, r in routines.routines_for("Gemm").items() if ":bfloat16:" in d and r.available())
SETTINGS = dict(deadline=None, derandomize=True, database=None)
ACTIVATIONS = [None, "Relu", "Clip", "LeakyRelu", "HardSigmoid", "Sigmoid", "Tanh"]


def test_every_form_is_registered():
    """The VDPBF16PS forms, and the AMX ones (offered where the CPU and the kernel allow tiles)."""
    forms = [f"gemm_{a}{e}" for a in ("amx", "bf16") for e in ("", "_f32in", "_f32io", "_f32out")]
    for op in ("MatMul", "Gemm"):
        table = routines.routines_for(op)
        assert sorted(d.rsplit("/", 1)[1] for d in table if ":bfloat16:" in d) == forms
        amx = cpu.kernel_module("gemm_bf16", "amx")
        assert all(table[d].available() == (amx is not None and amx.available) for d in table if "_amx" in d)
    assert len(MATMUL) == len(GEMM) == (8 if any("_amx" in d for d in MATMUL) else 4)


def _activation_nodes(activation, last, inits):
    if activation is None:
        return [], last
    inputs = [last]
    if activation == "Clip":
        inits += [("lo", np.float32(-0.4)), ("hi", np.float32(0.9))]
        inputs += ["lo", "hi"]
    return [helper.make_node(activation, inputs, ["y"], name="act", **ACTIVATION_ATTRS.get(activation, {}))], "y"


def matmul_graph(a_shape, b, bias=None, activation=None):
    """``a @ b`` (layer ``mm``), then ``+ bias`` and an activation, imported with fusion."""
    inits = [("b", b)]
    nodes, last = [helper.make_node("MatMul", ["a", "b"], ["y0"], name="mm")], "y0"
    if bias is not None:
        inits.append(("bias", bias))
        nodes.append(helper.make_node("Add", [last, "bias"], ["y1"], name="add"))
        last = "y1"
    more, last = _activation_nodes(activation, last, inits)
    model = make_model(nodes + more, [("a", list(a_shape))], [(last, None)], initializers=inits)
    return workbench.load(model.SerializeToString())


def gemm_graph(m, w, c=None, activation=None, **attrs):
    inits = [("w", w)] + ([("c", c)] if c is not None else [])
    k = w.shape[1] if attrs.get("transB") else w.shape[0]
    nodes = [helper.make_node("Gemm", ["a", "w"] + (["c"] if c is not None else []), ["y0"], name="gemm", **attrs)]
    more, last = _activation_nodes(activation, "y0", inits)
    model = make_model(nodes + more, [("a", [m, k])], [(last, None)], initializers=inits)
    return workbench.load(model.SerializeToString())


@settings(max_examples=30, **SETTINGS)
@given(descriptor=st.sampled_from(MATMUL), lead=st.lists(st.integers(1, 5), min_size=0, max_size=2),
       m=st.integers(1, 40), k=st.integers(1, 300), n=st.integers(1, 200), bias=st.booleans(),
       activation=st.sampled_from(ACTIVATIONS), threads=st.integers(1, 3), seed=st.integers(0, 2 ** 16))
def test_matmul_matches_reference(descriptor, lead, m, k, n, bias, activation, threads, seed):
    rng = np.random.default_rng(seed)
    # weights scaled as trained layers' are, so outputs are about unit-sized before the activation
    b = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    graph = matmul_graph(lead + [m, k], b, rng.standard_normal(n).astype(np.float32) if bias else None, activation)
    assert_routine_matches(graph, descriptor, expect_layers=["mm"], num_threads=threads, seed=seed)


@settings(max_examples=30, **SETTINGS)
@given(descriptor=st.sampled_from(GEMM), m=st.integers(1, 40), k=st.integers(1, 300), n=st.integers(1, 200),
       trans_b=st.booleans(), c=st.sampled_from([None, "column", "scalar"]), alpha=st.sampled_from([1.0, 0.5]),
       beta=st.sampled_from([1.0, 2.0]), activation=st.sampled_from(ACTIVATIONS), threads=st.integers(1, 3),
       seed=st.integers(0, 2 ** 16))
def test_gemm_matches_reference(descriptor, m, k, n, trans_b, c, alpha, beta, activation, threads, seed):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((n, k) if trans_b else (k, n)) / np.sqrt(k)).astype(np.float32)
    cv = {None: None, "column": rng.standard_normal(n).astype(np.float32), "scalar": np.float32(0.3)}[c]
    graph = gemm_graph(m, w, cv, activation, transB=int(trans_b), alpha=alpha, beta=beta)
    assert_routine_matches(graph, descriptor, expect_layers=["gemm"], num_threads=threads, seed=seed)


def test_error_is_a_bfloat16_one():
    """A classifier-sized product: the error is bfloat16 rounding of operands (well above float32's,
    well under the stated tolerance) and the same with and without the float32 forms."""
    rng = np.random.default_rng(3)
    graph = matmul_graph([1, 40, 512], (rng.standard_normal((512, 700)) / np.sqrt(512)).astype(np.float32))
    for descriptor in MATMUL:
        ours, ref, used = run_with_routine(graph, descriptor)
        (name, r), = ref.items()
        err = float(np.abs(ours[name].astype(np.float64) - r).max() / np.abs(r).max())
        assert 1e-4 < err < 1.5e-2, (descriptor, err)


def test_refuses_what_it_cannot_run():
    rng = np.random.default_rng(0)
    cases = [
        # a run-time right operand (attention's scores), no constant to pack
        (lambda: workbench.load(make_model([helper.make_node("MatMul", ["a", "b"], ["y"], name="mm")],
                                           [("a", [4, 8]), ("b", [8, 5])], [("y", None)]).SerializeToString())),
        # a batched constant right operand
        (lambda: matmul_graph([2, 4, 8], rng.standard_normal((2, 8, 5)).astype(np.float32))),
        # transA
        (lambda: gemm_graph(8, rng.standard_normal((8, 5)).astype(np.float32), transA=1)),
        # C with a row per output row is no bias
        (lambda: gemm_graph(4, rng.standard_normal((8, 5)).astype(np.float32), rng.standard_normal((4, 5)).astype(np.float32))),
    ]
    for make in cases:
        graph = make()
        for layer in graph:
            specs = graph.input_specs(layer)
            assert not any(r.applies(layer, specs) for d, r in routines.routines_for(layer.op).items() if ":bfloat16:" in d)


@pytest.mark.parametrize("descriptor", MATMUL)
def test_nan_and_inf_reach_their_rows(descriptor):
    rng = np.random.default_rng(1)
    graph = matmul_graph([6, 32], (rng.standard_normal((32, 20)) / 6).astype(np.float32), rng.standard_normal(20).astype(np.float32))
    a = rng.standard_normal((6, 32)).astype(np.float32)
    a[1, 3], a[4, 30] = np.nan, np.inf
    ours, ref, used = run_with_routine(graph, descriptor, feeds={"a": a})
    assert used == ["mm"]
    (name, r), = ref.items()
    got = ours[name].astype(np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(r))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(r))
    assert np.isnan(r[1]).all() and np.isinf(r[4]).any()
