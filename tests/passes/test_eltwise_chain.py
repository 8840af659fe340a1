"""EltwiseChain: runs of Add/Sub/Mul/Div fused into one layer (passes/fuse_eltwise_chain.py) and
its routines (routines/eltwise_chain.py): ONNX Runtime's outputs, the layers left, the export
round trip, bit-identical results to the unfused layers, NaN/Inf, and the kernel's checks."""
import numpy as np
import onnx
import pytest
from hypothesis import example, given, settings, strategies as st
from onnx import helper

import workbench
from onnx_helpers import assert_matches_onnxruntime, make_model
from routine_helpers import bkey, assert_routine_matches, compiled_in, run_with_routine
from workbench.onnx_io.ort import relative_error, run_onnxruntime
from workbench.onnx_io.write import export_graph
from workbench.routines.eltwise import kernels

CHAIN = {"nchw": "cpu:float32:nchw/direct", "nhwc": "cpu:float32:nhwc/direct"}


def node(op, ins, outs, name, **attrs):
    return helper.make_node(op, ins, outs, name=name, **attrs)


def rse_model(rng, c=16, hw=(20, 24)):
    """PP-OCR's residual squeeze-excite neck as Paddle2ONNX writes it: ``x + x * hardsigmoid(se(x))``,
    then ``+ nearest-upsampled(y)``, then a Relu-fused Sub and a Div by a constant."""
    h, w = hw
    inits = [("w1", (rng.standard_normal((c // 4, c, 1, 1)) * 0.3).astype(np.float32)),
             ("w2", (rng.standard_normal((c, c // 4, 1, 1)) * 0.3).astype(np.float32)),
             ("scales", np.array([1, 1, 2, 2], np.float32)),
             ("shift", rng.standard_normal((1, c, 1, 1)).astype(np.float32)),
             ("half", np.array(0.5, np.float32))]
    nodes = [node("Conv", ["x", "wx"], ["f"], "conv", pads=[1, 1, 1, 1]),
             node("GlobalAveragePool", ["f"], ["g"], "gap"),
             node("Conv", ["g", "w1"], ["g1"], "se1"), node("Relu", ["g1"], ["g2"], "se_relu"),
             node("Conv", ["g2", "w2"], ["g3"], "se2"), node("HardSigmoid", ["g3"], ["s"], "se_gate", alpha=0.2, beta=0.5),
             node("Mul", ["f", "s"], ["fs"], "mul"), node("Add", ["f", "fs"], ["r"], "add"),
             node("Resize", ["y", "", "scales"], ["up"], "up", mode="nearest"),
             node("Add", ["r", "up"], ["sum"], "add_up"),
             node("Sub", ["shift", "sum"], ["d"], "sub"), node("Relu", ["d"], ["dr"], "sub_relu"),
             node("Div", ["dr", "half"], ["out"], "div")]
    inits.append(("wx", (rng.standard_normal((c, 3, 3, 3)) * 0.3).astype(np.float32)))
    return make_model(nodes, [("x", [1, 3, h, w]), ("y", [1, c, h // 2, w // 2])], [("out", [1, c, h, w])], inits)


def test_rse_neck_becomes_one_chain_and_matches_onnxruntime():
    rng = np.random.default_rng(0)
    model = rse_model(rng)
    graph, _ = assert_matches_onnxruntime(model)
    chains = [l for l in graph if l.op == "EltwiseChain"]
    assert len(chains) == 1
    chain = chains[0]
    # the chain reads y where it lies, not its upsampled copy (passes/fuse_upsample_read.py)
    assert chain.name == "div" and chain.attrs["fusion"] == "eltwise_chain+upsample"
    assert chain.attrs["upsample"] == [[2, 2, 2]] and chain.inputs[2] == "y"
    assert graph.meta["passes"]["fuse_upsample_reads"] == ["up"]
    assert [s["op"] for s in chain.attrs["steps"]] == ["Mul", "Add", "Add", "Sub", "Div"]
    assert chain.attrs["steps"][3]["activation"] == "Relu"
    assert sorted(chain.fused) == sorted(["div", "mul", "add", "add_up", "sub", "sub_relu", "up"])
    assert not any(l.op in ("Add", "Sub", "Mul", "Div") for l in graph)
    # the activations fused into se1, se2 and the Sub step
    assert [l.op for l in graph] == ["Conv", "GlobalAveragePool", "Conv", "Conv", "EltwiseChain"]


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_chain_routines_match_the_unfused_layers_bit_for_bit(layout):
    rng = np.random.default_rng(1)
    model = rse_model(rng)
    fused = workbench.load(model.SerializeToString())
    ours, ref, used = run_with_routine(fused, CHAIN[layout], layers=["div"])
    assert used == ["div"]
    unfused = workbench.ReferenceExecutor(workbench.load(model.SerializeToString(), fuse=False)).run(
        workbench.random_inputs(fused, seed=0))
    np.testing.assert_array_equal(ours["out"], unfused["out"])
    np.testing.assert_array_equal(ref["out"], unfused["out"])


def test_export_writes_the_steps_back_and_reimports_the_chain():
    rng = np.random.default_rng(2)
    model = rse_model(rng)
    graph = workbench.load(model.SerializeToString())
    exported = export_graph(graph)
    onnx.checker.check_model(exported)
    assert [n.name for n in exported.graph.node if n.op_type in ("Add", "Sub", "Mul", "Div", "Resize")] == [
        "up", "mul", "add", "add_up", "sub", "div"]
    feeds = workbench.random_inputs(graph, seed=3)
    a, b = run_onnxruntime(exported, feeds), run_onnxruntime(model, feeds)
    assert relative_error(a["out"], b["out"]) <= 1e-6
    again = workbench.load(exported)
    assert [(l.name, l.op) for l in again] == [(l.name, l.op) for l in graph]
    assert again.layer("div").attrs["steps"] == graph.layer("div").attrs["steps"]
    assert again.layer("div").attrs["upsample"] == graph.layer("div").attrs["upsample"]


def test_nan_and_inf_propagate_as_in_onnxruntime():
    rng = np.random.default_rng(3)
    model = rse_model(rng)
    graph = workbench.load(model.SerializeToString())
    feeds = workbench.random_inputs(graph, seed=4)
    feeds["y"][0, 1, 2, 3] = np.nan
    feeds["y"][0, 2, 0, 0] = np.inf
    feeds["y"][0, 3, 1, 1] = -np.inf
    ref = run_onnxruntime(model, feeds)["out"]
    for layout in CHAIN:
        ours, _, used = run_with_routine(graph, CHAIN[layout], layers=["div"], feeds=feeds)
        assert used == ["div"]
        np.testing.assert_array_equal(np.isnan(ours["out"]), np.isnan(ref))
        np.testing.assert_array_equal(np.isposinf(ours["out"]), np.isposinf(ref))
        finite = np.isfinite(ref)
        assert relative_error(ours["out"][finite], ref[finite]) <= 1e-6


def test_long_runs_split_at_eight_steps_and_graph_outputs_stay_whole():
    # (fold_affine takes runs by constant per-channel operands first: a runtime one keeps them binary)
    nodes, prev = [], "x"
    for i in range(11):
        nodes.append(node(["Add", "Mul", "Sub", "Div"][i % 4], [prev, "y"], [f"t{i}"], f"op{i}"))
        prev = f"t{i}"
    model = make_model(nodes, [("x", [1, 4, 5, 6]), ("y", [1, 4, 1, 1])], [(prev, [1, 4, 5, 6]), ("t5", [1, 4, 5, 6])])
    graph, _ = assert_matches_onnxruntime(model)
    chains = [l for l in graph if l.op == "EltwiseChain"]
    # t5 is a graph output: op0..op5 end there; op6..op10 make the second chain
    assert [(c.name, len(c.attrs["steps"])) for c in chains] == [("op5", 6), ("op10", 5)]
    for layout in CHAIN:
        assert_routine_matches(graph, CHAIN[layout], rtol=0, expect_layers=["op5", "op10"])


def test_a_chain_writes_its_nhwc_concat_part_in_place():
    """The chain's output as a channel slice of the Concat's NHWC buffer, an input a slice too."""
    rng = np.random.default_rng(7)
    inits = [("k", rng.standard_normal((1, 6, 1, 1)).astype(np.float32))]
    nodes = [node("Split", ["x"], ["xa", "xb"], "split", axis=1, num_outputs=2),
             node("Mul", ["xa", "s"], ["m"], "mul"), node("Add", ["m", "k"], ["a"], "add"),
             node("Sub", ["a", "xb"], ["c"], "sub"),
             node("Relu", ["x"], ["r"], "relu"),
             node("Concat", ["c", "r"], ["out"], "cat", axis=1)]
    model = make_model(nodes, [("x", [1, 12, 7, 9]), ("s", [1, 6, 1, 1])], [("out", [1, 18, 7, 9])], inits, opset=18)
    graph = workbench.load(model.SerializeToString())
    assert graph.layer("sub").op == "EltwiseChain"
    compiled = compiled_in(graph, "nhwc")
    assert compiled.slices[bkey("c", "nhwc")].base == bkey("out", "nhwc")
    feeds = workbench.random_inputs(graph, seed=8)
    np.testing.assert_allclose(compiled.run(feeds)["out"], run_onnxruntime(model, feeds)["out"], rtol=1e-6, atol=0)


SHAPES = [(1, 5, 6, 7), (1, 5, 1, 1), (1, 1, 1, 1), (1,), (7,), (6, 7), (1, 5, 6, 1)]


@settings(max_examples=25, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.sampled_from(["Add", "Sub", "Mul", "Div"]), st.sampled_from(SHAPES), st.booleans(),
                          st.sampled_from([None, "Relu", "Sigmoid", "Tanh"])), min_size=2, max_size=7),
       st.sampled_from(["nchw", "nhwc"]), st.integers(0, 3))
@example([("Add", (1, 5, 6, 7), False, "Tanh"), ("Sub", (1, 5, 6, 7), False, None)]
         + [("Add", (1, 5, 6, 7), False, None)] * 3 + [("Mul", (1, 5, 6, 7), False, None)], "nchw", 0)
def test_random_chains_match_the_reference(steps, layout, seed):
    """Any mix of ops, operand broadcasts (scalar, per-channel, per-row, trailing axes) and
    operand orders, with fused activations, against the NumPy reference (7 steps: with x, the
    most inputs a chain takes)."""
    rng = np.random.default_rng(seed)
    nodes, inputs, prev = [], [("x", [1, 5, 6, 7])], "x"
    for i, (op, shape, first, act) in enumerate(steps):
        inputs.append((f"v{i}", list(shape)))
        ins = [f"v{i}", prev] if first else [prev, f"v{i}"]
        out = f"t{i}" if act is None else f"p{i}"
        nodes.append(node(op, ins, [out], f"op{i}"))
        if act is not None:
            nodes.append(node(act, [out], [f"t{i}"], f"act{i}"))
        prev = f"t{i}"
    model = make_model(nodes, inputs, [(prev, [1, 5, 6, 7])])
    graph = workbench.load(model.SerializeToString())
    assert [l.op for l in graph] == ["EltwiseChain"]
    feeds = {k: (v + np.float32(3.0) * np.sign(v)).astype(np.float32)   # away from 0: Div stays finite
             for k, v in workbench.random_inputs(graph, seed=seed).items()}
    ours, ref, used = run_with_routine(graph, CHAIN[layout], feeds=feeds)
    assert used == [f"op{len(steps) - 1}"]
    # Sigmoid and Tanh differ from NumPy's by an ulp or two, which later steps carry: the bound
    # scales with the largest value (a sum of values near 30 that cancels to 0.14 kept 2e-6 of it).
    np.testing.assert_allclose(ours[prev], ref[prev], rtol=2e-6, atol=1e-6 * max(1.0, float(np.abs(ref[prev]).max())))


def test_chain_kernel_checks_its_arguments():
    k = kernels("eltwise_chain")
    x, out = np.ones((2, 3), np.float32), np.empty((2, 3), np.float32)
    ok = ([x, x], [[0, 0, 3, 1]] * 2, out, [1, 1, 2, 3])
    k.Chain(*ok, [("Add", 0, 1, 0, 0.0, 0.0)])(1)
    np.testing.assert_array_equal(out, 2 * x)
    with pytest.raises(ValueError, match="neither an input"):
        k.Chain(*ok, [("Add", 0, -1, 0, 0.0, 0.0)])
    with pytest.raises(ValueError, match="unknown op"):
        k.Chain(*ok, [("Pow", 0, 1, 0, 0.0, 0.0)])
    with pytest.raises(ValueError, match="1 to 8 steps"):
        k.Chain(*ok, [("Add", 0, 1, 0, 0.0, 0.0)] * 9)
    with pytest.raises(ValueError, match="activation code"):
        k.Chain(*ok, [("Add", 0, 1, 7, 0.0, 0.0)])
    with pytest.raises(ValueError, match="writes 12"):
        k.Chain([x, x], [[0, 0, 3, 1]] * 2, out, [1, 2, 2, 3], [("Add", 0, 1, 0, 0.0, 0.0)])
    with pytest.raises(ValueError, match="read up to element"):
        k.Chain([x, x], [[0, 0, 4, 1]] * 2, out, [1, 1, 2, 3], [("Add", 0, 1, 0, 0.0, 0.0)])
    with pytest.raises(TypeError, match="float32"):
        k.Chain([x.astype(np.float64), x], [[0, 0, 3, 1]] * 2, out, [1, 1, 2, 3], [("Add", 0, 1, 0, 0.0, 0.0)])
