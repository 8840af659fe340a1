"""Concat parts written in place and Split outputs as views (workbench.runtime.slices), and the pass that
reads a whole Split's input in a Concat (workbench.ir.passes.rejoin_splits): the same outputs as
ONNX Runtime, and the buffers shared where the plan says they may be."""
import numpy as np
import pytest
from onnx import helper

import workbench
from onnx_helpers import make_model
from workbench.runtime import cpu
from workbench import routines
from workbench.onnx_io.ort import relative_error, run_onnxruntime
from workbench.runtime.compiled import CompiledModel
from workbench.runtime.slices import Slice
from routine_helpers import bkey

REFERENCE = "cpu:float32:nchw/reference"


def _conv(rng, name, src, dst, cin, cout, k=1, **attrs):
    w = (rng.standard_normal((cout, cin, k, k)) / np.sqrt(cin * k * k)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    node = helper.make_node("Conv", [src, f"{name}_w", f"{name}_b"], [dst], name=name, kernel_shape=[k, k],
                            pads=[k // 2] * 4, **attrs)
    return node, [(f"{name}_w", w), (f"{name}_b", b)]


def csp_model(rng, c=8, hw=(9, 13), shortcut=True, sppf=True):
    """A YOLOv8 C2f block as exported: 1x1 conv (SiLU as Sigmoid/Mul), Split in halves, a 3x3 /
    3x3 bottleneck on the second half (with the shortcut Add), Concat of both halves and the
    bottleneck, 1x1 conv; and (``sppf``) a tail of MaxPool twice, Concat of all three, 1x1 conv."""
    nodes, inits = [], []

    def conv_silu(name, src, dst, cin, cout, k=1):
        node, w = _conv(rng, name, src, f"{name}_c", cin, cout, k)
        nodes.extend([node, helper.make_node("Sigmoid", [f"{name}_c"], [f"{name}_s"]),
                      helper.make_node("Mul", [f"{name}_c", f"{name}_s"], [dst])])
        inits.extend(w)

    conv_silu("cv1", "x", "t", 5, 2 * c)
    nodes.append(helper.make_node("Split", ["t", "halves"], ["s0", "s1"], axis=1, name="split"))
    inits.append(("halves", np.array([c, c], np.int64)))
    conv_silu("m_cv1", "s1", "h", c, c, 3)
    conv_silu("m_cv2", "h", "b0", c, c, 3)
    if shortcut:
        nodes.append(helper.make_node("Add", ["s1", "b0"], ["b"], name="shortcut"))
    nodes.append(helper.make_node("Concat", ["s0", "s1", "b" if shortcut else "b0"], ["cat"], axis=1, name="concat"))
    conv_silu("cv2", "cat", "y", 3 * c, 2 * c)
    if not sppf:
        return make_model(nodes, [("x", [1, 5, *hw])], [("y", None)], inits)
    nodes += [helper.make_node("MaxPool", ["y"], ["p1"], kernel_shape=[5, 5], pads=[2] * 4, name="pool1"),
              helper.make_node("MaxPool", ["p1"], ["p2"], kernel_shape=[5, 5], pads=[2] * 4, name="pool2"),
              helper.make_node("Concat", ["y", "p1", "p2"], ["sppf"], axis=1, name="concat_sppf")]
    conv_silu("cv3", "sppf", "out", 6 * c, 7)
    return make_model(nodes, [("x", [1, 5, *hw])], [("out", None)], inits)


def _check(model, compiled, graph, seed=0):
    feeds = workbench.random_inputs(graph, seed=seed)
    ours, theirs = compiled.run(feeds), run_onnxruntime(model, feeds)
    for name, want in theirs.items():
        assert relative_error(ours[name], want) <= 1e-4, name


def test_rejoin_pass_reads_the_split_input():
    model = csp_model(np.random.default_rng(0))
    graph = workbench.load(model.SerializeToString())
    concat = graph.layer("concat")
    assert concat.inputs == [graph.producer(concat.inputs[0]).outputs[0], concat.inputs[1]]
    assert concat.inputs[0] == graph.layer("split").inputs[0]
    assert "rejoined_split" in concat.attrs["fusion"]
    _check(model, CompiledModel(graph, {l.name: REFERENCE for l in graph}), graph)


def test_split_of_other_axis_or_partial_is_not_rejoined():
    nodes = [helper.make_node("Split", ["x"], ["a", "b", "c"], axis=1, num_outputs=3, name="split"),
             helper.make_node("Concat", ["a", "b"], ["y"], axis=1, name="partial"),
             helper.make_node("Concat", ["a", "b", "c"], ["z"], axis=2, name="other_axis"),
             helper.make_node("Concat", ["b", "a", "c"], ["v"], axis=1, name="reordered")]
    model = make_model(nodes, [("x", [1, 6, 4, 5])], [("y", None), ("z", None), ("v", None)], opset=18)
    graph = workbench.load(model.SerializeToString())
    for name, n in (("partial", 2), ("other_axis", 3), ("reordered", 3)):
        assert len(graph.layer(name).inputs) == n
    _check(model, CompiledModel(graph, {l.name: REFERENCE for l in graph}), graph)


def test_nchw_batch1_concat_parts_and_split_views_share_one_buffer():
    """Channels at batch 1 in NCHW are contiguous ranges: every producer writes into the Concat's
    buffer and every Split output is a view, whatever the routine."""
    rng = np.random.default_rng(1)
    model = csp_model(rng)
    graph = workbench.load(model.SerializeToString())
    compiled = CompiledModel(graph, {l.name: "cpu:float32:nchw/copy" if l.op in ("Concat", "Split") else REFERENCE
                                     for l in graph}, num_threads=2)
    cat = bkey("cat", "nchw")
    t, b0 = bkey("t", "nchw"), bkey("b", "nchw")   # b: the bottleneck conv with the shortcut fused
    assert compiled.slices[t].base == cat and compiled.slices[b0].base == cat
    assert {k for k, s in compiled.slices.items() if s.base == bkey("sppf", "nchw")} == {
        bkey(graph.layer(n).outputs[0], "nchw") for n in ("cv2", "pool1", "pool2")}
    for key in (t, b0):
        assert key not in compiled.memory.values      # no buffer of its own
    views = compiled._views
    assert np.shares_memory(views[t], views[bkey("cat", "nchw")])
    for seed in (0, 1):
        _check(model, compiled, graph, seed)


def _nhwc_assignment(graph, conv3x3):
    assignment = {}
    for layer in graph:
        specs = graph.input_specs(layer)
        want = ("cpu:float32:nhwc/gemm1x1_avx512" if layer.op == "Conv" and layer.attrs["kernel_shape"] == [1, 1]
                else conv3x3 if layer.op == "Conv" else "cpu:float32:nhwc/copy" if layer.op in ("Concat", "Split")
                else None)
        table = routines.routines_for(layer.op)
        if want is None or want not in table or not table[want].applies(layer, specs):
            nhwc = [d for d, r in table.items() if ":nhwc/" in d and r.applies(layer, specs)]
            want = nhwc[0] if nhwc else REFERENCE
        assignment[layer.name] = want
    return assignment


@pytest.mark.parametrize("conv3x3, written_in_place", [("cpu:float32:nhwc/implicit_avx512", True),
                                                      ("cpu:float32:nhwc/winograd4_avx512", True),
                                                      ("cpu:float32:nhwc/winograd4", False)])
def test_nhwc_channel_slices_only_through_routines_that_take_them(conv3x3, written_in_place):
    """In NHWC a channel slice is strided rows: the 1x1 convs (strided in and out), implicit GEMM
    and our Winograd (strided out) write into the Concat's buffer; the Split output that a 3x3
    conv reads (its input read as whole pixels) is copied out, and the BLAS Winograd's output
    is copied in."""
    if not cpu.supports("avx512") or cpu.kernel_module("gemm512", "avx512") is None:
        pytest.skip("this CPU lacks AVX-512 or gemm512_avx512 is not built")
    rng = np.random.default_rng(2)
    model = csp_model(rng, shortcut=False)   # the bottleneck's conv writes the Concat part
    graph = workbench.load(model.SerializeToString())
    assignment = _nhwc_assignment(graph, conv3x3)
    compiled = CompiledModel(graph, assignment, num_threads=2)
    slices = compiled.slices
    cat = bkey("cat", "nhwc")
    assert slices[bkey("t", "nhwc")].base == cat and slices[bkey("t", "nhwc")].axis == 3
    s0, s1 = graph.layer("split").outputs
    assert slices[bkey(s0, "nhwc")].base == bkey("t", "nhwc")      # read by nothing now: a view
    assert bkey(s1, "nhwc") not in slices                       # read by the 3x3 conv: its own copy
    b = bkey(graph.layer("m_cv2").outputs[0], "nhwc")
    assert (b in slices) == written_in_place
    for seed in (0, 1):
        _check(model, compiled, graph, seed)


def test_graph_outputs_and_inputs_keep_their_buffers():
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Concat", ["x", "r"], ["y"], axis=1, name="cat")]
    model = make_model(nodes, [("x", [1, 3, 4, 5])], [("y", None), ("r", None)])
    graph = workbench.load(model.SerializeToString())
    compiled = CompiledModel(graph, {l.name: REFERENCE for l in graph})
    assert compiled.slices == {}
    _check(model, compiled, graph)


def test_nan_in_a_winograd_layer_writing_a_concat_part_propagates_as_in_onnxruntime():
    """A non-finite input sends our Winograd to its exact im2col path, which then writes the
    Concat part through a buffer of its own."""
    if not cpu.supports("avx512") or cpu.kernel_module("winograd512", "avx512") is None:
        pytest.skip("this CPU lacks AVX-512 or winograd512_avx512 is not built")
    # Without the max pools: ONNX Runtime's MaxPool drops a NaN or keeps it by the order it compares in.
    model = csp_model(np.random.default_rng(4), shortcut=False, sppf=False)
    graph = workbench.load(model.SerializeToString())
    compiled = CompiledModel(graph, _nhwc_assignment(graph, "cpu:float32:nhwc/winograd4_avx512"), num_threads=2)
    assert compiled.slices[bkey(graph.layer("m_cv2").outputs[0], "nhwc")].base == bkey("cat", "nhwc")
    x = workbench.random_inputs(graph, seed=5)["x"]
    x[0, 1, 4, 6] = np.nan
    ours, theirs = compiled.run({"x": x})["y"], run_onnxruntime(model, {"x": x})["y"]
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    finite = np.isfinite(theirs)
    assert relative_error(ours[finite], theirs[finite]) <= 1e-4


@pytest.mark.parametrize("conv3x3", ["cpu:float32:nhwc/implicit_avx512", "cpu:float32:nhwc/im2col_avx512",
                                     "cpu:float32:nhwc/winograd4_avx512"])
def test_nhwc_shortcut_convs_and_sppf_pools_write_their_concat_parts(conv3x3):
    """The bottleneck's shortcut Add is its second conv's residual (after the SiLU); that conv
    writes its Concat part, as the pools write theirs.  The Split half it adds is read as a
    contiguous block by every 3x3 routine, so it keeps a buffer of its own (im2col_avx512 takes
    strided pixels for its input, not for its residual: that half as a view failed to bind)."""
    if not cpu.supports("avx512") or cpu.kernel_module("gemm512", "avx512") is None:
        pytest.skip("this CPU lacks AVX-512 or gemm512_avx512 is not built")
    model = csp_model(np.random.default_rng(6))
    graph = workbench.load(model.SerializeToString())
    assert "shortcut" not in graph and graph.layer("m_cv2").attrs["residual_after_activation"]
    assignment = _nhwc_assignment(graph, conv3x3)
    assert assignment["m_cv2"] == conv3x3 and assignment["pool1"].startswith("cpu:float32:nhwc/")
    compiled = CompiledModel(graph, assignment, num_threads=2)
    assert compiled.slices[bkey("b", "nhwc")] == Slice(bkey("cat", "nhwc"), 3, 16, 24)
    assert bkey(graph.layer("split").outputs[1], "nhwc") not in compiled.slices
    for i, name in enumerate(("cv2", "pool1", "pool2")):
        assert compiled.slices[bkey(graph.layer(name).outputs[0], "nhwc")] == Slice(bkey("sppf", "nhwc"), 3, 16 * i, 16 * (i + 1))
    for seed in (0, 1):
        _check(model, compiled, graph, seed)


def test_adapts_write_contiguous_parts_of_a_channels_first_concat():
    """A detector head: NHWC convolutions whose outputs a batch-1 NCHW Concat joins; each layout
    adapt writes its part of the Concat's buffer."""
    rng = np.random.default_rng(7)
    nodes, inits = [], []
    for name, m in (("box", 4), ("cls", 3)):
        node, w = _conv(rng, name, "x", name, 6, m)
        nodes.append(node)
        inits += w
    nodes.append(helper.make_node("Concat", ["box", "cls"], ["y"], axis=1, name="head"))
    model = make_model(nodes, [("x", [1, 6, 5, 7])], [("y", None)], inits)
    graph = workbench.load(model.SerializeToString())
    nhwc_conv = next(d for d, r in routines.routines_for("Conv").items()
                     if ":nhwc/" in d and not d.endswith("reference") and r.applies(graph.layer("box"), graph.input_specs(graph.layer("box"))))
    assignment = {"box": nhwc_conv, "cls": nhwc_conv, "head": "cpu:float32:nchw/copy"}
    compiled = CompiledModel(graph, assignment, num_threads=2)
    assert compiled.slices[bkey("box", "nchw")] == Slice(bkey("y", "nchw"), 1, 0, 4)
    assert compiled.slices[bkey("cls", "nchw")] == Slice(bkey("y", "nchw"), 1, 4, 7)
    assert len(compiled.adapts) == 3   # the input to NHWC, each head back
    _check(model, compiled, graph)


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_a_concat_of_a_concat_chains_its_slices(layout):
    """Concat(Concat(a, b), c): the inner Concat is a slice of the outer one's buffer, and its
    parts are slices of that slice (NCHW: contiguous ranges of one; NHWC: channel slices of
    channel slices, one row stride)."""
    descriptor = f"cpu:float32:{layout}/gemm1x1_avx512"
    rng = np.random.default_rng(8)
    nodes, inits = [], []
    for name, m in (("a", 5), ("b", 7), ("c", 3)):
        node, w = _conv(rng, name, "x", name, 6, m)
        nodes.append(node)
        inits += w
    nodes += [helper.make_node("Concat", ["a", "b"], ["inner"], axis=1, name="inner"),
              helper.make_node("Concat", ["inner", "c"], ["outer"], axis=1, name="outer")]
    node, w = _conv(rng, "d", "outer", "y", 15, 4)
    nodes.append(node)
    inits += w
    model = make_model(nodes, [("x", [1, 6, 5, 7])], [("y", None)], inits)
    graph = workbench.load(model.SerializeToString())
    if not routines.get("Conv", descriptor).applies(graph.layer("a"), graph.input_specs(graph.layer("a"))):
        pytest.skip("this CPU lacks AVX-512 or gemm512_avx512 is not built")
    assignment = {l.name: descriptor if l.op == "Conv" else f"cpu:float32:{layout}/copy" for l in graph}
    compiled = CompiledModel(graph, assignment, num_threads=2)
    axis = 3 if layout == "nhwc" else 1
    assert compiled.slices[bkey("inner", layout)] == Slice(bkey("outer", layout), axis, 0, 12)
    assert compiled.slices[bkey("c", layout)] == Slice(bkey("outer", layout), axis, 12, 15)
    assert compiled.slices[bkey("a", layout)] == Slice(bkey("inner", layout), axis, 0, 5)
    assert compiled.slices[bkey("b", layout)] == Slice(bkey("inner", layout), axis, 5, 12)
    assert bkey("a", layout) not in compiled.memory.values and bkey("inner", layout) not in compiled.memory.values
    for seed in (0, 1):
        _check(model, compiled, graph, seed)


def head_model(rng, extra_reader=False):
    """A YOLOv8 head at two scales: per scale a box conv (4 maps) and a class conv (3), their
    channel Concat, a Reshape to (1, 7, H*W); the scales joined along that last axis, then split
    into boxes (read through a Reshape by a softmax decode) and classes (Sigmoid).  With
    ``extra_reader`` the first scale's flattened map is also a graph output."""
    nodes, inits = [helper.make_node("MaxPool", ["x"], ["x2"], kernel_shape=[2, 2], strides=[2, 2], name="down")], []
    for i, (src, hw) in enumerate((("x", 8 * 10), ("x2", 4 * 5))):
        for name, m in (("box", 4), ("cls", 3)):
            node, w = _conv(rng, f"{name}{i}", src, f"{name}{i}", 6, m)
            nodes.append(node)
            inits += w
        nodes += [helper.make_node("Concat", [f"box{i}", f"cls{i}"], [f"cat{i}"], axis=1, name=f"cat{i}"),
                  helper.make_node("Reshape", [f"cat{i}", "flat"], [f"flat{i}"], name=f"flat{i}")]
    inits += [("flat", np.array([1, 7, -1], np.int64)), ("sizes", np.array([4, 3], np.int64)),
              ("bins", np.array([1, 2, 2, 100], np.int64)), ("dfl_w", np.float32([[[[0.0]], [[1.0]]]]))]
    nodes += [helper.make_node("Concat", ["flat0", "flat1"], ["all"], axis=2, name="all"),
              helper.make_node("Split", ["all", "sizes"], ["boxes", "classes"], axis=1, name="split"),
              helper.make_node("Reshape", ["boxes", "bins"], ["b4"], name="b4"),
              helper.make_node("Transpose", ["b4"], ["bt"], perm=[0, 2, 1, 3], name="bt"),
              helper.make_node("Softmax", ["bt"], ["bs"], axis=1, name="bs"),
              helper.make_node("Conv", ["bs", "dfl_w"], ["dist"], kernel_shape=[1, 1], name="dfl"),
              helper.make_node("Sigmoid", ["classes"], ["scores"], name="scores")]
    outputs = [("dist", None), ("scores", None)] + ([("flat0", None)] if extra_reader else [])
    return make_model(nodes, [("x", [1, 6, 8, 10])], outputs, inits)


def _head_assignment(graph, scale_concat):
    """NHWC convolutions, the per-scale Concats in ``scale_concat``, the rest NCHW copies and views."""
    nhwc_conv = next(d for d, r in routines.routines_for("Conv").items()
                     if ":nhwc/" in d and not d.endswith("reference") and r.applies(graph.layer("box0"), graph.input_specs(graph.layer("box0"))))
    assignment = {}
    for layer in graph:
        table = routines.routines_for(layer.op)
        assignment[layer.name] = (nhwc_conv if layer.op == "Conv" else f"cpu:float32:{scale_concat}/copy"
                                  if layer.name in ("cat0", "cat1") else "cpu:float32:nchw/copy"
                                  if layer.op in ("Concat", "Split") else "cpu:float32:nhwc/direct"
                                  if layer.op == "MaxPool" and "cpu:float32:nhwc/direct" in table
                                  else next(d for d in ("cpu:float32:nchw/view", "cpu:float32:nchw/direct") if d in table
                                            and table[d].applies(layer, graph.input_specs(layer))))
    return assignment


@pytest.mark.parametrize("scale_concat", ["nchw", "nhwc"])
def test_a_detector_head_writes_its_scales_in_place(scale_concat):
    """The head's layout adapts write each scale's planes straight into the scales' Concat (one
    row of it a row of planes), through the per-scale Concat (NCHW: its parts are channel ranges
    of those planes) or after it (NHWC: the adapt of the joined maps); the boxes of the Split are
    a view that the decode reads through its Reshape."""
    model = head_model(np.random.default_rng(9))
    graph = workbench.load(model.SerializeToString())
    assignment = _head_assignment(graph, scale_concat)
    compiled = CompiledModel(graph, assignment, num_threads=2)
    whole = bkey("all", "nchw")
    assert compiled.slices[bkey("cat0", "nchw")] == Slice(whole, 2, 0, 80, (1, 7, 8, 10))
    assert compiled.slices[bkey("cat1", "nchw")] == Slice(whole, 2, 80, 100, (1, 7, 4, 5))
    if scale_concat == "nchw":
        for i in (0, 1):
            assert compiled.slices[bkey(f"box{i}", "nchw")] == Slice(bkey(f"cat{i}", "nchw"), 1, 0, 4)
            assert compiled.slices[bkey(f"cls{i}", "nchw")] == Slice(bkey(f"cat{i}", "nchw"), 1, 4, 7)
    assert compiled.slices[bkey("boxes", "nchw")] == Slice(whole, 1, 0, 4)
    views = compiled._views
    assert np.shares_memory(views[bkey("box1", "nchw" if scale_concat == "nchw" else "nhwc")], views[whole]) == (scale_concat == "nchw")
    assert np.shares_memory(views[bkey("b4", "nchw")], views[whole])
    for seed in (0, 1):
        _check(model, compiled, graph, seed)


def test_a_flattened_map_read_elsewhere_keeps_its_buffer():
    model = head_model(np.random.default_rng(10), extra_reader=True)
    graph = workbench.load(model.SerializeToString())
    compiled = CompiledModel(graph, _head_assignment(graph, "nchw"), num_threads=2)
    assert bkey("cat0", "nchw") not in compiled.slices and bkey("cat1", "nchw") in compiled.slices
    _check(model, compiled, graph)
