"""Fusions of graphs spelled as exporters write them: ONNX Runtime's outputs, the expected layers,
the fusion tags, the tuned routines, and the fused graph written back as ONNX (what a tuned file
holds) running in ONNX Runtime and importing again to the same layers."""
import numpy as np
import onnx
import pytest
from onnx import helper

import workbench
from onnx_helpers import assert_matches_onnxruntime, check_round_trip, make_model
from routine_helpers import assert_routine_matches
from workbench.runtime import cpu
from workbench.onnx_io.ort import relative_error, run_onnxruntime

#: Whether a routine here applies a post-activation affine (passes/fuse_post_affine.py): the pass
#: moves one into a Conv only then.
POST_AFFINE_HERE = cpu.supports("avx512") and cpu.kernel_module("gemm512", "avx512") is not None

S2 = np.float32(np.sqrt(2))


def node(op, ins, outs, name, **attrs):
    return helper.make_node(op, ins, outs, name=name, **attrs)


def const(name, value, shape=None):
    """A Constant node, as Paddle2ONNX and TorchScript write scalars."""
    v = np.asarray(value, np.float32).reshape(shape if shape is not None else ())
    return helper.make_node("Constant", [], [name], name=f"{name}_c", value=onnx.numpy_helper.from_array(v, name))


def conv(name, x, y, cin, cout, rng, k=3, group=1, bias=True):
    w = (rng.standard_normal((cout, cin // group, k, k)) * 0.3).astype(np.float32)
    inits = [(f"{name}.w", w)] + ([(f"{name}.b", rng.standard_normal(cout).astype(np.float32))] if bias else [])
    return node("Conv", [x, f"{name}.w"] + ([f"{name}.b"] if bias else []), [y], name, pads=[k // 2] * 4,
                group=group), inits


def paddle_hardswish(x, y, p):
    """Paddle2ONNX's hard-swish: Add(x, 3) -> Clip(0, 6) -> Mul(x, .) -> Div(., 6), constants as nodes."""
    return [const(f"{p}.three", 3.0), const(f"{p}.zero", 0.0), const(f"{p}.six", 6.0),
            node("Add", [x, f"{p}.three"], [f"{p}.a"], f"{p}.add"),
            node("Clip", [f"{p}.a", f"{p}.zero", f"{p}.six"], [f"{p}.c"], f"{p}.clip"),
            node("Mul", [x, f"{p}.c"], [f"{p}.m"], f"{p}.mul"),
            node("Div", [f"{p}.m", f"{p}.six"], [y], f"{p}.div")]


def test_paddle_lcnet_block(rng):
    # conv -> Mul(k) -> Add(b) -> hardswish -> Mul(k2) -> Add(b2) -> 1x1 conv -> ... -> 3x3 depthwise
    # (PP-LCNet's learnable affine blocks, constants of shape (1,) and () as Paddle2ONNX writes them)
    c1, i1 = conv("conv1", "x", "c1", 3, 8, rng)
    c2, i2 = conv("conv2", "h2", "c2", 8, 8, rng, k=1)
    c3, i3 = conv("conv3", "h3", "y", 8, 8, rng, group=8)
    nodes = [c1, const("k1", 0.9, (1,)), node("Mul", ["k1", "c1"], ["m1"], "mul1"),
             const("b1", 0.4, (1,)), node("Add", ["m1", "b1"], ["a1"], "add1"),
             *paddle_hardswish("a1", "h1", "hs1"),
             const("k2", 0.5, (1,)), node("Mul", ["k2", "h1"], ["m2"], "mul2"),
             const("b2", -0.1, (1,)), node("Add", ["m2", "b2"], ["h2"], "add2"),
             c2, *paddle_hardswish("c2", "g2", "hs2"),
             const("k3", 1.3, (1,)), node("Mul", ["k3", "g2"], ["m3"], "mul3"),
             const("b3", 0.2, (1,)), node("Add", ["m3", "b3"], ["h3"], "add3"), c3]
    model = make_model(nodes, [("x", [1, 3, 12, 10])], [("y", None)], i1 + i2 + i3, opset=12)
    graph, _ = assert_matches_onnxruntime(model)
    # mul1/add1 fold into conv1 and hs1 fuses into it; mul2/add2 fold into conv2 (1x1, no padding);
    # mul3/add3 cannot fold into the padded depthwise conv3: one ChannelAffine, which then ends
    # conv2's epilogue after its hard swish where a routine here applies that.
    layers = [(l.name, l.op, l.attrs.get("activation")) for l in graph]
    if POST_AFFINE_HERE:
        assert layers == [("conv1", "Conv", "HardSwish"), ("conv2", "Conv", "HardSwish"), ("conv3", "Conv", None)]
        post = graph.layer("conv2").attrs["post_affine"]
        np.testing.assert_array_equal(post["scale"], np.full(8, 1.3, np.float32))
        np.testing.assert_array_equal(post["shift"], np.full(8, 0.2, np.float32))
        assert graph.layer("conv2").attrs["fusion"].endswith("+post-affine")
        assert graph.layer("conv2").fused[-2:] == ["mul3", "add3"]
    else:
        assert layers == [("conv1", "Conv", "HardSwish"), ("conv2", "Conv", "HardSwish"),
                          ("mul3", "ChannelAffine", None), ("conv3", "Conv", None)]
    assert graph.layer("conv1").attrs["fusion"] == "affine(mul/add)+hardswish(add/clip/mul/div)"
    assert graph.layer("conv2").fused[:2] == ["mul2", "add2"]
    assert "hs2.clip" in graph.layer("conv2").fused
    check_round_trip(graph, model)


@pytest.mark.skipif(not POST_AFFINE_HERE, reason="no routine applies a post-activation affine on this CPU")
@pytest.mark.parametrize("k, act, fused", [(1, "HardSwish", True), (3, "Relu", True), (1, "Clip", True),
                                           (3, "HardSigmoid", True), (1, "Sigmoid", False)])
def test_post_activation_affine_ends_the_conv_epilogue(rng, k, act, fused):
    """PP-LCNetV3's pointwise block as Paddle2ONNX writes it: conv, activation, Mul(k), Add(b)
    (per-channel constants), then a padded depthwise conv.  The affine moves into the first
    conv's epilogue after an activation our GEMM applies in registers; after a Sigmoid it stays."""
    c1, i1 = conv("conv1", "x", "c1", 8, 24, rng, k=k)
    c2, i2 = conv("conv2", "a1", "y", 24, 24, rng, group=24)
    acts = {"HardSwish": [node("HardSwish", ["c1"], ["h1"], "act")],
            "Relu": [node("Relu", ["c1"], ["h1"], "act")],
            "Clip": [const("lo", 0.0), const("hi", 6.0), node("Clip", ["c1", "lo", "hi"], ["h1"], "act")],
            "HardSigmoid": [node("HardSigmoid", ["c1"], ["h1"], "act", alpha=0.3, beta=0.4)],
            "Sigmoid": [node("Sigmoid", ["c1"], ["h1"], "act")]}[act]
    scale = rng.standard_normal((1, 24, 1, 1)).astype(np.float32)
    shift = rng.standard_normal((1, 24, 1, 1)).astype(np.float32)
    nodes = [c1, *acts, node("Mul", ["h1", "k"], ["m1"], "mul"), node("Add", ["m1", "b"], ["a1"], "add"), c2]
    model = make_model(nodes, [("x", [1, 8, 9, 14])], [("y", None)], i1 + i2 + [("k", scale), ("b", shift)])
    graph, _ = assert_matches_onnxruntime(model)
    assert [l.op for l in graph] == (["Conv", "Conv"] if fused else ["Conv", "ChannelAffine", "Conv"])
    first = graph.layer("conv1")
    assert ("post_affine" in first.attrs) == fused
    if fused:
        routine = "cpu:float32:nhwc/gemm1x1_avx512" if k == 1 else "cpu:float32:nhwc/implicit_avx512"
        assert_routine_matches(graph, routine, expect_layers=["conv1"])
        table = workbench.routines.routines_for("Conv")
        for other in ("cpu:float32:nchw/gemm1x1_avx512", "cpu:float32:nhwc/winograd4_avx512", "cpu:float32:nhwc/im2col"):
            assert other not in table or not table[other].applies(first, graph.input_specs(first)), other
    check_round_trip(graph, model)


@pytest.mark.parametrize("spelling", ["div6", "mul_sixth", "gate_first"])
def test_hardswish_and_hardsigmoid_spellings(rng, spelling):
    sixth = np.float32(1 / 6)
    if spelling == "div6":        # x * relu6(x + 3) / 6 after a Relu: a standalone HardSwish layer
        hs = [node("Add", ["r", "three"], ["a"], "add"), node("Clip", ["a", "zero", "six"], ["c"], "clip"),
              node("Mul", ["c", "r"], ["m"], "mul"), node("Div", ["m", "six"], ["y"], "div")]
    elif spelling == "mul_sixth":
        hs = [node("Add", ["three", "r"], ["a"], "add"), node("Clip", ["a", "zero", "six"], ["c"], "clip"),
              node("Mul", ["r", "c"], ["m"], "mul"), node("Mul", ["m", "sixth"], ["y"], "mul6")]
    else:                         # hard-sigmoid first (x * (relu6(x + 3) / 6)), then a gate on x
        hs = [node("Add", ["r", "three"], ["a"], "add"), node("Clip", ["a", "zero", "six"], ["c"], "clip"),
              node("Div", ["c", "six"], ["g"], "div"), node("Mul", ["r", "g"], ["y"], "mul")]
    nodes = [node("Relu", ["x"], ["r"], "relu")] + hs
    inits = [("three", np.float32(3)), ("zero", np.float32(0)), ("six", np.float32(6)), ("sixth", sixth)]
    model = make_model(nodes, [("x", [2, 3, 5, 4])], [("y", None)], inits, opset=13)
    graph, _ = assert_matches_onnxruntime(model)
    assert graph.op_counts() == {"HardSwish": 1, "Relu": 1}
    assert graph.layer("clip").attrs["fusion"].startswith("hardswish(")
    assert_routine_matches(graph, "cpu:float32:nchw/direct", expect_layers=["clip", "relu"])
    check_round_trip(graph, model)


def test_hardsigmoid_spelling_with_other_constants(rng):
    # clip(x * 0.2 + 0.5, 0, 1) written out: HardSigmoid(0.2, 0.5), no HardSwish.
    nodes = [node("Relu", ["x"], ["r"], "relu"), node("Mul", ["r", "k"], ["m"], "mul"),
             node("Add", ["m", "b"], ["a"], "add"), node("Clip", ["a", "zero", "one"], ["y"], "clip")]
    inits = [("k", np.float32(0.2)), ("b", np.float32(0.5)), ("zero", np.float32(0)), ("one", np.float32(1))]
    model = make_model(nodes, [("x", [2, 3, 5, 4])], [("y", None)], inits, opset=13)
    graph, _ = assert_matches_onnxruntime(model)
    assert graph.op_counts() == {"HardSigmoid": 1, "Relu": 1}
    hs = graph.layer("clip")
    assert np.isclose(hs.attrs["alpha"], 0.2) and np.isclose(hs.attrs["beta"], 0.5)
    check_round_trip(graph, model)


@pytest.mark.parametrize("order", ["x_first", "sigmoid_first"])
def test_silu_after_add(rng, order):
    # Add -> Sigmoid -> Mul: SiLU fuses into the Add's epilogue (the eltwise kernels run it)
    nodes = [node("Add", ["x", "z"], ["s"], "add"), node("Sigmoid", ["s"], ["g"], "sig"),
             node("Mul", ["s", "g"] if order == "x_first" else ["g", "s"], ["y"], "mul")]
    model = make_model(nodes, [("x", [2, 6, 5, 7]), ("z", [2, 6, 5, 7])], [("y", None)])
    graph, _ = assert_matches_onnxruntime(model)
    assert [(l.name, l.op, l.attrs.get("activation"), l.attrs.get("fusion")) for l in graph] == \
           [("add", "Add", "Silu", "silu")]
    for d in ("cpu:float32:nchw/direct", "cpu:float32:nhwc/direct"):
        assert_routine_matches(graph, d, expect_layers=["add"])
    check_round_trip(graph, model)


@pytest.mark.parametrize("act", ["silu", "gelu", "gelu_tanh", "silu_dw"])
def test_silu_and_gelu_after_conv_fuse_into_its_epilogue(rng, act):
    """Conv + SiLU/GELU as exporters spell them: one Conv layer with the activation in its
    epilogue, and every convolution routine that applies (GEMM, Winograd, depthwise, the AVX-512
    ones) computes it as the reference does."""
    from workbench import routines
    group = 8 if act == "silu_dw" else 1
    c, inits = conv("conv", "x", "c", 8, 8, rng, group=group)
    if act.startswith("silu"):
        tail = [node("Sigmoid", ["c"], ["g"], "sig"), node("Mul", ["c", "g"], ["y"], "mul")]
        want = ("Silu", "silu")
    else:
        tail = [node("Gelu", ["c"], ["y"], "gelu", approximate="tanh" if act == "gelu_tanh" else "none")]
        want = ("Gelu", None)
    model = make_model([c, *tail], [("x", [1, 8, 9, 11])], [("y", None)], inits, opset=20 if act.startswith("gelu") else 17)
    graph, _ = assert_matches_onnxruntime(model)
    layer = graph.layer("conv")
    assert [l.name for l in graph] == ["conv"]
    assert (layer.attrs.get("activation"), layer.attrs.get("fusion") if act.startswith("silu") else None) == want
    found = [r.descriptor for r in routines.applicable(graph, layer) if r.algo != "reference"]
    assert len(found) >= (2 if group > 1 else 4), found
    for d in found:
        assert_routine_matches(graph, d, expect_layers=["conv"], num_threads=2)
    check_round_trip(graph, model)


GELU_ERF = {
    # torch's TorchScript exporter: x * 0.5 * (1 + erf(x / sqrt2)) as Div, Erf, Add, Mul(x), Mul(0.5)
    "torch": lambda: [node("Div", ["x", "s2"], ["d"], "div"), node("Erf", ["d"], ["e"], "erf"),
                      node("Add", ["e", "one"], ["a"], "add"), node("Mul", ["x", "a"], ["m"], "mul"),
                      node("Mul", ["m", "half"], ["y"], "mul_half")],
    # HuggingFace style: (0.5 * x) * (1 + erf(x * (1/sqrt2)))
    "half_first": lambda: [node("Mul", ["x", "half"], ["h"], "mul_half"), node("Mul", ["x", "rs2"], ["d"], "scale"),
                           node("Erf", ["d"], ["e"], "erf"), node("Add", ["one", "e"], ["a"], "add"),
                           node("Mul", ["h", "a"], ["y"], "mul")],
    # x * ((1 + erf) * 0.5)
    "inner_half": lambda: [node("Div", ["x", "s2"], ["d"], "div"), node("Erf", ["d"], ["e"], "erf"),
                           node("Add", ["e", "one"], ["a"], "add"), node("Mul", ["a", "half"], ["m"], "mul_half"),
                           node("Mul", ["m", "x"], ["y"], "mul")],
}


@pytest.mark.parametrize("spelling", sorted(GELU_ERF))
@pytest.mark.parametrize("opset", [13, 20])
def test_gelu_erf_spellings(spelling, opset):
    inits = [("s2", S2), ("rs2", np.float32(1 / np.sqrt(2))), ("one", np.float32(1)),
             ("half", np.full((1,), 0.5, np.float32))]
    model = make_model(GELU_ERF[spelling](), [("x", [2, 5, 6, 4])], [("y", None)], inits, opset=opset)
    graph, _ = assert_matches_onnxruntime(model)
    (layer,) = list(graph)
    assert (layer.name, layer.op, layer.attrs["approximate"], layer.attrs["fusion"]) == ("erf", "Gelu", "none", "gelu(erf)")
    assert len(layer.fused) == 5
    assert_routine_matches(graph, "cpu:float32:nchw/direct", expect_layers=["erf"])
    check_round_trip(graph, model)


def test_gelu_tanh_spelling():
    k = np.float32(np.sqrt(2 / np.pi))
    nodes = [node("Pow", ["x", "three"], ["p"], "pow"), node("Mul", ["p", "c"], ["pc"], "mul_c"),
             node("Add", ["x", "pc"], ["i"], "inner"), node("Mul", ["i", "k"], ["u"], "mul_k"),
             node("Tanh", ["u"], ["t"], "tanh"), node("Add", ["t", "one"], ["a"], "add"),
             node("Mul", ["x", "a"], ["m"], "mul"), node("Mul", ["m", "half"], ["y"], "mul_half")]
    inits = [("three", np.float32(3)), ("c", np.float32(0.044715)), ("k", k), ("one", np.float32(1)),
             ("half", np.float32(0.5))]
    model = make_model(nodes, [("x", [3, 7, 10])], [("y", None)], inits, opset=13)
    graph, _ = assert_matches_onnxruntime(model)
    (layer,) = list(graph)
    assert (layer.name, layer.op, layer.attrs["approximate"]) == ("tanh", "Gelu", "tanh")
    assert_routine_matches(graph, "cpu:float32:nchw/direct", expect_layers=["tanh"])
    check_round_trip(graph, model)


def test_not_a_pattern_stays():
    # x * sigmoid(2x) (not SiLU), erf without the 0.5, a Clip(0, 6) that is just ReLU6 on x + 3
    nodes = [node("Mul", ["x", "two"], ["x2"], "dbl"), node("Sigmoid", ["x2"], ["g"], "sig"),
             node("Mul", ["x", "g"], ["y1"], "mul"),
             node("Erf", ["x"], ["e"], "erf"), node("Add", ["e", "one"], ["a"], "add"), node("Mul", ["x", "a"], ["y2"], "mul2"),
             node("Add", ["x", "three"], ["t"], "add3"), node("Clip", ["t", "zero", "six"], ["y3"], "clip")]
    inits = [("two", np.float32(2)), ("one", np.float32(1)), ("three", np.float32(3)), ("zero", np.float32(0)),
             ("six", np.float32(6))]
    model = make_model(nodes, [("x", [2, 3, 4])], [("y1", None), ("y2", None), ("y3", None)], inits)
    graph, _ = assert_matches_onnxruntime(model)
    assert not any(l.op in ("Silu", "Gelu", "HardSwish", "HardSigmoid") for l in graph)


@pytest.mark.parametrize("with_affine", [False, True])
@pytest.mark.parametrize("opset", [13, 17])
def test_layernorm_spelling(rng, with_affine, opset):
    d = 12
    axes = {"axes": [-1]}
    nodes = [node("ReduceMean", ["x"], ["mu"], "mean", **axes), node("Sub", ["x", "mu"], ["dx"], "sub"),
             node("Pow", ["dx", "two"], ["sq"], "pow"), node("ReduceMean", ["sq"], ["var"], "var", **axes),
             node("Add", ["var", "eps"], ["ve"], "add_eps"), node("Sqrt", ["ve"], ["sd"], "sqrt"),
             node("Div", ["dx", "sd"], ["n"], "div")]
    inits = [("two", np.float32(2)), ("eps", np.float32(1e-5))]
    out = "n"
    if with_affine:
        nodes += [node("Mul", ["n", "g"], ["ng"], "mul_g"), node("Add", ["ng", "b"], ["y"], "add_b")]
        inits += [("g", rng.uniform(0.5, 1.5, d).astype(np.float32)), ("b", rng.normal(size=d).astype(np.float32))]
        out = "y"
    model = make_model(nodes, [("x", [2, 9, d])], [(out, None)], inits, opset=opset)
    graph, _ = assert_matches_onnxruntime(model)
    (layer,) = list(graph)
    assert (layer.name, layer.op, layer.attrs["axis"], layer.attrs["fusion"]) == ("mean", "LayerNormalization", 2, "layernorm")
    assert len(layer.fused) == (9 if with_affine else 7)
    check_round_trip(graph, model)


def test_per_channel_affine_folds_into_gemm_and_merges(rng):
    w = rng.standard_normal((5, 6)).astype(np.float32)
    nodes = [node("Gemm", ["x", "w"], ["g"], "fc", transB=1), node("Mul", ["g", "k"], ["m"], "mul"),
             node("Sub", ["m", "b"], ["y"], "sub"),
             # a graph input: no producer to fold into, Div and Add merge into one ChannelAffine
             node("Div", ["z", "k4"], ["zd"], "div"), node("Add", ["zd", "b4"], ["y2"], "add")]
    inits = [("w", w), ("k", rng.uniform(0.5, 2, 5).astype(np.float32)), ("b", rng.normal(size=(1, 5)).astype(np.float32)),
             ("k4", rng.uniform(0.5, 2, (4, 1, 1)).astype(np.float32)), ("b4", np.float32(0.3))]
    model = make_model(nodes, [("x", [3, 6]), ("z", [2, 4, 3, 5])], [("y", None), ("y2", None)], inits)
    graph, _ = assert_matches_onnxruntime(model)
    assert graph.op_counts() == {"ChannelAffine": 1, "Gemm": 1}
    assert graph.layer("fc").attrs["fusion"] == "affine(mul/sub)"
    check_round_trip(graph, model)


def test_linear_as_paddle_writes_it_takes_its_bias_and_activation(rng):
    """Paddle2ONNX's ``linear`` on (batch, tokens, features): MatMul by the weights, then Add of the
    bias (a Constant node here), then Relu: one MatMul layer, which exports back and re-imports."""
    w = (rng.standard_normal((12, 20)) * 0.3).astype(np.float32)
    bias = rng.standard_normal(20).astype(np.float32)
    nodes = [node("MatMul", ["x", "fc.w"], ["t"], "fc"),
             helper.make_node("Constant", [], ["fc.b"], name="fc.b_c", value=onnx.numpy_helper.from_array(bias, "fc.b")),
             node("Add", ["t", "fc.b"], ["u"], "fc.add"), node("Relu", ["u"], ["y"], "fc.relu")]
    model = make_model(nodes, [("x", [1, 40, 12])], [("y", None)], [("fc.w", w)])
    graph, _ = assert_matches_onnxruntime(model)
    assert graph.op_counts() == {"MatMul": 1}
    fc = graph.layer("fc")
    assert fc.attrs["fusion"] == "bias" and fc.attrs["activation"] == "Relu"
    np.testing.assert_array_equal(fc.consts[2], bias)
    check_round_trip(graph, model)


def test_affine_left_alone_where_it_must(rng):
    # The conv output is read twice (no fold back), the next conv is padded (no shift forward),
    # and the constant varies along H (not per-channel).
    c, inits = conv("conv", "x", "c", 3, 4, rng)
    c2, inits2 = conv("conv2", "a", "y", 4, 4, rng)
    nodes = [c, node("Add", ["c", "b"], ["a"], "add"), c2, node("Mul", ["c", "h"], ["y2"], "mul_h")]
    inits += inits2 + [("b", np.float32(0.7)), ("h", rng.normal(size=(6, 1)).astype(np.float32))]
    model = make_model(nodes, [("x", [1, 3, 6, 5])], [("y", None), ("y2", None)], inits)
    graph, _ = assert_matches_onnxruntime(model)
    assert graph.op_counts() == {"Add": 1, "Conv": 2, "Mul": 1}


# -- PyTorch's exporters and a real model --------------------------------------------------------------
TORCH_CASES = {   # module factory, expected layers after fusion: (op, activation) in order
    "silu": (lambda nn: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.SiLU()), [("Conv", "Silu")]),
    "gelu": (lambda nn: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GELU()), [("Conv", "Gelu")]),
    "gelu_tanh": (lambda nn: nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GELU(approximate="tanh")),
                  [("Conv", "Gelu")]),
    "layernorm": (lambda nn: nn.Sequential(nn.Flatten(2), nn.LayerNorm(35)), [("Reshape", None), ("LayerNormalization", None)]),
}


@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("name", sorted(TORCH_CASES))
def test_torchscript_export_fuses(name, opset, tmp_path):
    torch = pytest.importorskip("torch", reason="torch not installed: PyTorch export tests need the 2.13.0 CPU wheel")
    import warnings
    factory, expected = TORCH_CASES[name]
    torch.manual_seed(0)
    model = factory(torch.nn).eval()
    x = torch.randn(2, 3, 5, 7)
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), input_names=["x"], opset_version=opset, dynamo=False)
    onnx_model = onnx.load(str(path))
    graph, ours = assert_matches_onnxruntime(onnx_model)
    with torch.no_grad():
        ref = model(torch.from_numpy(workbench.random_inputs(graph, seed=0)["x"])).numpy()
    assert relative_error(next(iter(ours.values())), ref) <= 1e-4
    assert [(l.op, l.attrs.get("activation")) for l in graph] == expected, graph.op_counts()
    check_round_trip(graph, onnx_model)


DETECTOR = "rapidocr-onnxruntime/1.4.4/ch_PP-OCRv4_det_infer.onnx"


def test_paddleocr_detector_after_fusion():
    import os
    from pathlib import Path
    path = Path(os.environ.get("WORKBENCH_MODEL_CACHE", Path.home() / ".cache/routine-workbench/models")) / DETECTOR
    if not path.exists():
        pytest.skip(f"{path} not fetched (python benchmarks/realmodels.py)")
    model = onnx.load(str(path))
    shapes = {"x": (1, 3, 96, 128)}
    graph, plain = workbench.load(model, shapes=shapes), workbench.load(model, shapes=shapes, fuse=False)
    feeds = {"x": np.random.default_rng(0).uniform(-2, 2, shapes["x"]).astype(np.float32)}
    (ort,) = run_onnxruntime(model, feeds).values()
    (fused,) = workbench.ReferenceExecutor(graph).run(feeds).values()
    (unfused,) = workbench.ReferenceExecutor(plain).run(feeds).values()
    # The map is ~1e-5 here: the unfused graph itself is 1.4% of max|ort| from ONNX Runtime (both
    # round differently near zero; workbench run --check passes it within ORT's own spread).  Fusion
    # must not move us: within 1e-4 of the unfused result, and no further from ONNX Runtime.
    assert relative_error(fused, unfused) <= 1e-4
    assert np.abs(fused - ort).max() <= 1.05 * np.abs(unfused - ort).max()
    # 281 before these passes; 13 of its 15 ChannelAffine layers end a hard-swish Conv's epilogue
    # where a routine here applies that (passes/fuse_post_affine.py), and one, the head's
    # BatchNormalization after ConvTranspose -> bias Add, folds into the ConvTranspose once the Add
    # has (passes/fold_affine.py); the 19 Mul/Add layers of the residual squeeze-excite neck make
    # 8 chains (passes/fuse_eltwise_chain.py), and 3 of them read the upsampled coarser map where it
    # lies (passes/fuse_upsample_read.py)
    post = sum("post_affine" in l.attrs for l in graph)
    assert len(plain) == 330 and len(graph) == 116 - post - 11 - 3 and post in ((13,) if POST_AFFINE_HERE else (0,))
    assert graph.layer("p2o.ConvTranspose.0").attrs["fusion"] == "affine(add/channelaffine)"
    counts = graph.op_counts()
    assert counts["EltwiseChain"] == 8 and len(graph.meta["passes"]["fuse_eltwise_chains"]) == 11
    assert len(graph.meta["passes"]["fuse_upsample_reads"]) == 3 and counts.get("Resize", 0) == 3
    assert "Div" not in counts and "Clip" not in counts and counts["ChannelAffine"] == 14 - post   # the head's folded into its ConvTranspose
    tags = [l.attrs.get("fusion", "") for l in graph]
    assert sum("hardswish(add/clip/mul/div)" in t for t in tags) == 24
