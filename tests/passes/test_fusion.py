"""Each graph pass keeps the outputs equal to ONNX Runtime's and does what it claims."""
import numpy as np
import pytest
from onnx import helper

import workbench
from onnx_helpers import assert_matches_onnxruntime, check_round_trip, make_model


def bn_params(rng, c):
    return [rng.uniform(0.5, 1.5, c), rng.normal(0, 0.3, c), rng.normal(0, 0.3, c), rng.uniform(0.3, 2.0, c)]


def bn_node(name, x, y, prefix):
    return helper.make_node("BatchNormalization", [x] + [f"{prefix}.{p}" for p in ("s", "b", "m", "v")], [y],
                            name=name, epsilon=1e-3)


def bn_inits(rng, c, prefix):
    return [(f"{prefix}.{p}", v.astype(np.float32)) for p, v in zip(("s", "b", "m", "v"), bn_params(rng, c))]


@pytest.mark.parametrize("group", [1, 2])
@pytest.mark.parametrize("with_bias", [False, True])
def test_batchnorm_folds_into_conv_and_convtranspose(rng, group, with_bias):
    w = rng.standard_normal((6, 4 // group, 3, 2)).astype(np.float32)
    wt = rng.standard_normal((6, 4 // group, 3, 3)).astype(np.float32)   # ConvTranspose: (C_in, M/g, k, k)
    inits = [("w", w), ("wt", wt)] + bn_inits(rng, 6, "bn1") + bn_inits(rng, 4, "bn2")
    conv_in = ["x", "w"] + (["cb"] if with_bias else [])
    convt_in = ["c1", "wt"] + (["tb"] if with_bias else [])
    if with_bias:
        inits += [("cb", rng.standard_normal(6).astype(np.float32)), ("tb", rng.standard_normal(4).astype(np.float32))]
    nodes = [helper.make_node("Conv", conv_in, ["c0"], name="conv", group=group, pads=[1, 0, 1, 1]),
             bn_node("bn1", "c0", "c1", "bn1"),
             helper.make_node("ConvTranspose", convt_in, ["t0"], name="convt", group=group, strides=[2, 2]),
             bn_node("bn2", "t0", "y", "bn2")]
    model = make_model(nodes, [("x", [2, 4, 7, 6])], [("y", None)], inits)
    graph, _ = assert_matches_onnxruntime(model)
    assert graph.op_counts() == {"Conv": 1, "ConvTranspose": 1}
    assert graph.layer("conv").fused == ["conv", "bn1"]


@pytest.mark.parametrize("trans_b", [0, 1])
def test_batchnorm_folds_into_gemm(rng, trans_b):
    b = rng.standard_normal((5, 7) if trans_b else (7, 5)).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "b", "c"], ["g"], name="fc", transB=trans_b, beta=0.5, alpha=1.5),
             bn_node("bn", "g", "y", "bn")]
    model = make_model(nodes, [("x", [3, 7])], [("y", None)],
                       [("b", b), ("c", rng.standard_normal(5).astype(np.float32))] + bn_inits(rng, 5, "bn"))
    graph, _ = assert_matches_onnxruntime(model)
    assert graph.op_counts() == {"Gemm": 1}


@pytest.mark.parametrize("group", [1, 2])
def test_batchnorm_after_a_bias_add_folds_once_the_add_has(rng, group):
    """ConvTranspose -> Add(bias) -> BatchNormalization -> Relu (PaddleOCR's DB head as exported):
    the BN's producer is the Add when BN folding runs, so it becomes a ChannelAffine; folding the
    Add into the ConvTranspose then leaves the affine right after it, and it folds too, the Relu
    fused after it: one layer, against ONNX Runtime."""
    w = rng.standard_normal((8, 6 // group, 2, 2)).astype(np.float32)
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["t"], name="ct", strides=[2, 2], group=group),
             helper.make_node("Add", ["t", "bias"], ["u"], name="add"),
             bn_node("bn", "u", "v", "bn"), helper.make_node("Relu", ["v"], ["y"], name="relu")]
    model = make_model(nodes, [("x", [1, 8, 5, 7])], [("y", None)],
                       [("w", w), ("bias", rng.standard_normal((1, 6, 1, 1)).astype(np.float32))] + bn_inits(rng, 6, "bn"))
    graph, _ = assert_matches_onnxruntime(model)
    assert graph.op_counts() == {"ConvTranspose": 1}
    assert graph.layer("ct").attrs["activation"] == "Relu"


def test_standalone_batchnorm_becomes_channel_affine(rng):
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"), bn_node("bn", "r", "y", "bn")]
    model = make_model(nodes, [("x", [2, 3, 5, 4])], [("y", None)], bn_inits(rng, 3, "bn"))
    graph, _ = assert_matches_onnxruntime(model)
    assert graph.op_counts() == {"ChannelAffine": 1, "Relu": 1}


ACTIVATIONS = [("Relu", {}, []), ("LeakyRelu", {"alpha": 0.2}, []), ("Sigmoid", {}, []), ("HardSwish", {}, []),
               ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, []), ("Tanh", {}, []),
               ("Clip", {}, [("lo", np.array(0, np.float32)), ("hi", np.array(6, np.float32))]),
               ("PRelu", {}, [("slope", np.linspace(-0.5, 0.5, 4, dtype=np.float32).reshape(4, 1, 1))])]


@pytest.mark.parametrize("act, attrs, extra", ACTIVATIONS, ids=[a[0] for a in ACTIVATIONS])
@pytest.mark.parametrize("producer", ["Conv", "Add"])
def test_activation_fuses_into_producer(rng, act, attrs, extra, producer):
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    if producer == "Conv":
        first = helper.make_node("Conv", ["x", "w"], ["p"], name="prod", pads=[1, 1, 1, 1])
        inits = [("w", w)]
    else:
        first = helper.make_node("Add", ["x", "x2"], ["p"], name="prod")
        inits = []
    nodes = [first, helper.make_node(act, ["p"] + [n for n, _ in extra], ["y"], name="act", **attrs)]
    inputs = [("x", [2, 3 if producer == "Conv" else 4, 6, 5])] + ([("x2", [2, 4, 6, 5])] if producer == "Add" else [])
    model = make_model(nodes, inputs, [("y", None)], inits + extra)
    graph, _ = assert_matches_onnxruntime(model)
    assert len(graph) == 1
    layer = graph.layer("prod")
    assert layer.attrs["activation"] == act and layer.fused == ["prod", "act"]


def test_residual_fusion_and_no_fusion_across_graph_outputs(rng):
    w1 = rng.standard_normal((4, 4, 3, 3)).astype(np.float32) * 0.3
    w2 = rng.standard_normal((4, 4, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "w2"], ["b"], name="conv_b"),
             helper.make_node("Add", ["a", "b"], ["s"], name="add"),
             helper.make_node("Relu", ["s"], ["r"], name="relu"),
             # second block: the conv output is also a graph output, so nothing may fuse into it
             helper.make_node("Conv", ["r", "w2"], ["c"], name="conv_c"),
             helper.make_node("Add", ["c", "r"], ["y"], name="add2")]
    model = make_model(nodes, [("x", [1, 4, 5, 7])], [("y", None), ("c", None)], [("w1", w1), ("w2", w2)])
    graph, _ = assert_matches_onnxruntime(model)
    fused = graph.layer("conv_b")   # both operands are convs: the later one absorbs the add
    assert fused.attrs["residual"] and fused.attrs["activation"] == "Relu"
    assert fused.inputs[3] == "a" and fused.fused == ["conv_b", "add", "relu"]
    assert "add2" in graph and not graph.layer("conv_c").attrs.get("residual")


def test_dead_layers_and_constant_subgraphs_are_removed(rng):
    nodes = [helper.make_node("Relu", ["x"], ["unused"], name="dead"),
             helper.make_node("Mul", ["k", "k"], ["k2"], name="const_mul"),   # constant: folded
             helper.make_node("Add", ["x", "k2"], ["y"], name="add")]
    model = make_model(nodes, [("x", [2, 3])], [("y", None)], [("k", np.arange(3, dtype=np.float32))])
    graph, _ = assert_matches_onnxruntime(model)
    assert [l.name for l in graph] == ["add"]
    np.testing.assert_array_equal(graph.layer("add").consts[1], np.arange(3, dtype=np.float32) ** 2)


def test_fold_constants_pass_on_a_built_graph():
    # A layer whose input becomes constant after import is folded by the pass, consumers get the value.
    from workbench.ir.graph import Graph, Layer, TensorSpec
    from workbench.ir.passes import fold_constants
    g = Graph(inputs={"x": TensorSpec((3,))}, outputs=["y"])
    g.add_layer(Layer("neg", "Neg", ["c"], ["n"], consts={0: np.array([1.0, 2.0, 3.0], np.float32)},
                      out_specs=[TensorSpec((3,))]))
    g.add_layer(Layer("add", "Add", ["x", "n"], ["y"], out_specs=[TensorSpec((3,))]))
    assert fold_constants(g) == ["neg"]
    assert [l.name for l in g] == ["add"]
    out = workbench.ReferenceExecutor(g).run({"x": np.ones(3, np.float32)})["y"]
    np.testing.assert_array_equal(out, [0.0, -1.0, -2.0])


def _silu_conv(name, x, y, w, k):
    """A Conv + SiLU as ultralytics exports it (Conv, Sigmoid, Mul)."""
    return [helper.make_node("Conv", [x, w, f"{w}.b"], [f"{name}.c"], name=name, pads=[k // 2] * 4),
            helper.make_node("Sigmoid", [f"{name}.c"], [f"{name}.s"], name=f"{name}.sigmoid"),
            helper.make_node("Mul", [f"{name}.c", f"{name}.s"], [y], name=f"{name}.mul")]


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("shortcut_first", [False, True])
def test_yolo_bottleneck_shortcut_fuses_after_the_activation(rng, k, shortcut_first):
    """``x + silu(conv(silu(conv(x))))``: the Add becomes the second Conv's residual, added after
    its activation; every routine that takes the fused Conv matches the reference (which matches
    ONNX Runtime), the Winograd ones included, and the export writes the Add after the activation
    again."""
    from routine_helpers import assert_routine_matches
    from workbench import routines
    c = 16
    inits = []
    for w in ("w1", "w2"):
        inits += [(w, (rng.standard_normal((c, c, k, k)) * 0.2).astype(np.float32)),
                  (f"{w}.b", rng.standard_normal(c).astype(np.float32))]
    add_in = ["x", "t2"] if shortcut_first else ["t2", "x"]
    nodes = (_silu_conv("cv1", "x", "t1", "w1", k) + _silu_conv("cv2", "t1", "t2", "w2", k)
             + [helper.make_node("Add", add_in, ["y"], name="add")])
    model = make_model(nodes, [("x", [1, c, 9, 11])], [("y", None)], inits)
    graph, _ = assert_matches_onnxruntime(model)
    assert graph.op_counts() == {"Conv": 2}
    conv = graph.layer("cv2")
    assert conv.attrs["activation"] == "Silu" and conv.attrs["residual_after_activation"]
    assert conv.inputs[3] == "x" and "add" in conv.fused
    specs = graph.input_specs(conv)
    taken = [d for d, r in routines.routines_for("Conv").items() if r.applies(conv, specs)]
    assert not any("depthwise" in d for d in taken) and (k == 1 or any("winograd" in d for d in taken))
    for d in taken:   # qint8: its 8-bit steps (tests/routines/test_qint8_eltwise.py checks it to the integer)
        assert_routine_matches(graph, d, rtol=0.03 if ":qint8:" in d else 1e-4, layers=["cv2"], expect_layers=["cv2"],
                               num_threads=2)
    check_round_trip(graph, model)


def test_a_shortcut_with_its_own_activation_stays_an_add(rng):
    """``relu(x + silu(conv(x)))``: two activations around the Add, which stays a layer."""
    inits = [("w1", (rng.standard_normal((8, 8, 3, 3)) * 0.2).astype(np.float32)),
             ("w1.b", rng.standard_normal(8).astype(np.float32))]
    nodes = _silu_conv("cv1", "x", "t1", "w1", 3) + [helper.make_node("Add", ["t1", "x"], ["s"], name="add"),
                                                     helper.make_node("Relu", ["s"], ["y"], name="relu")]
    model = make_model(nodes, [("x", [1, 8, 6, 7])], [("y", None)], inits)
    graph, _ = assert_matches_onnxruntime(model)
    assert graph.op_counts() == {"Add": 1, "Conv": 1}
    assert not graph.layer("cv1").attrs.get("residual")


@pytest.mark.parametrize("case", ["grouped", "read_twice", "graph_output", "then_affine"])
def test_where_a_shortcut_after_the_activation_is_left_alone(rng, case):
    """No fusion into a grouped Conv (its depthwise kernels add a residual before the activation
    only), nor where the activated output is read elsewhere or is a graph output; a per-channel
    affine after the fused shortcut stays out of the Conv's post-affine.  Each against ONNX
    Runtime, the Conv's inputs and attributes as they were where the Add stays."""
    c, group = 8, 8 if case == "grouped" else 1
    inits = [("w1", (rng.standard_normal((c, c // group, 3, 3)) * 0.2).astype(np.float32)),
             ("w1.b", rng.standard_normal(c).astype(np.float32))]
    conv = helper.make_node("Conv", ["x", "w1", "w1.b"], ["cv1.c"], name="cv1", pads=[1] * 4, group=group)
    nodes = [conv, helper.make_node("Sigmoid", ["cv1.c"], ["cv1.s"], name="cv1.sigmoid"),
             helper.make_node("Mul", ["cv1.c", "cv1.s"], ["t1"], name="cv1.mul"),
             helper.make_node("Add", ["t1", "x"], ["s"], name="add")]
    outputs = [("y", None)]
    if case == "then_affine":
        inits += [("k", rng.uniform(0.5, 2, (1, c, 1, 1)).astype(np.float32)),
                  ("k2", rng.standard_normal((1, c, 1, 1)).astype(np.float32))]
        nodes += [helper.make_node("Mul", ["s", "k"], ["u"], name="scale"),
                  helper.make_node("Add", ["u", "k2"], ["y"], name="shift")]
    elif case == "read_twice":
        nodes.append(helper.make_node("Mul", ["s", "t1"], ["y"], name="reuse"))
    else:   # the Add's output is the model's: nothing after it
        nodes[-1] = helper.make_node("Add", ["t1", "x"], ["y"], name="add")
        if case == "graph_output":
            outputs.append(("t1", None))
    model = make_model(nodes, [("x", [1, c, 6, 7])], outputs, inits)
    graph, _ = assert_matches_onnxruntime(model)
    layer = graph.layer("cv1")
    if case == "then_affine":
        assert layer.attrs["residual_after_activation"] and "post_affine" not in layer.attrs
        assert graph.op_counts()["Conv"] == 1 and len(graph) == 2   # the affine stays a layer of its own
    else:
        assert not layer.attrs.get("residual") and not layer.attrs.get("residual_after_activation")
        assert len(layer.inputs) == 3 and layer.outputs == ["t1"] and "add" not in layer.fused

