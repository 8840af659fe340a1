"""Softmax then its weighted sum over the same axis (a YOLOv8-family box decode), fused into one
SoftmaxDot layer (passes/fuse_softmax_dot.py): ONNX Runtime's outputs, the layers left, every
routine of the layer against the reference and against ONNX Runtime on NaN/Inf, and the export
round trip."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from onnx import helper

import workbench
from onnx_helpers import assert_matches_onnxruntime, check_round_trip, make_model
from routine_helpers import assert_routine_matches, parallel_even_when_small, run_with_routine
from workbench.runtime import cpu
from workbench.onnx_io.ort import relative_error, run_onnxruntime

ISAS = [isa for isa in (None, "avx2", "avx512") if isa is None or cpu.supports(isa)]
VARIANTS = [f"cpu:float32:nchw/direct{'_' + isa if isa else ''}" for isa in ISAS]


@pytest.fixture(autouse=True, scope="module")
def _parallel_even_when_small():
    with parallel_even_when_small("softmax"):
        yield


def dfl_model(batch, sides, bins, anchors, bias=False, opset=13, weights=None):
    """The decode as Ultralytics exports it: (b, sides * bins, a) -> Reshape (b, sides, bins, a) ->
    Transpose(0, 2, 1, 3) -> Softmax(axis=1) -> Conv 1x1 (bins -> 1, weights 0..bins-1) -> Reshape (b, sides, a)."""
    w = (np.arange(bins, dtype=np.float32) if weights is None else weights).reshape(1, bins, 1, 1)
    inits = [("shape4", np.array([batch, sides, bins, anchors], np.int64)),
             ("shape3", np.array([batch, sides, anchors], np.int64)), ("dfl.w", w)]
    conv_in = ["p", "dfl.w"]
    if bias:
        inits.append(("dfl.b", np.array([0.25], np.float32)))
        conv_in.append("dfl.b")
    nodes = [helper.make_node("Reshape", ["x", "shape4"], ["r"], name="dfl/Reshape"),
             helper.make_node("Transpose", ["r"], ["t"], name="dfl/Transpose", perm=[0, 2, 1, 3]),
             helper.make_node("Softmax", ["t"], ["p"], name="dfl/Softmax", axis=1),
             helper.make_node("Conv", conv_in, ["c"], name="dfl/conv", kernel_shape=[1, 1]),
             helper.make_node("Reshape", ["c", "shape3"], ["y"], name="dfl/Reshape_1")]
    return make_model(nodes, [("x", [batch, sides * bins, anchors])], [("y", None)], inits, opset=opset)


@settings(deadline=None, derandomize=True, max_examples=25)
@given(st.integers(1, 2), st.integers(1, 5), st.integers(2, 20), st.integers(1, 600), st.booleans(),
       st.sampled_from([13, 17]))
def test_yolo_box_decode_is_one_layer(batch, sides, bins, anchors, bias, opset):
    model = dfl_model(batch, sides, bins, anchors, bias, opset)
    graph, _ = assert_matches_onnxruntime(model)
    assert [l.op for l in graph] == ["Reshape", "SoftmaxDot", "Reshape"]
    layer = graph.layer("dfl/conv")
    if sides == 1:   # the Transpose moves only an axis of size 1: a reshape, joined to the first one
        assert layer.attrs == {"axis": 1, "fusion": "softmax+conv"}
        assert graph.meta["passes"]["fuse_softmax_dot"] == ["dfl/Softmax"]
        assert graph.meta["passes"]["tidy_reshapes"] == ["dfl/Transpose", "dfl/Reshape"]
    else:
        assert layer.attrs == {"axis": 2, "fusion": "transpose+softmax+conv"}
        assert graph.meta["passes"]["fuse_softmax_dot"] == ["dfl/Softmax", "dfl/Transpose"]
    for descriptor in VARIANTS:
        assert_routine_matches(graph, descriptor, expect_layers=["dfl/conv"])
    check_round_trip(graph, model)


def test_routines_match_onnxruntime_on_logits_far_apart():
    """Large logits (exp underflows for most bins) and weights that are not 0..n-1."""
    weights = np.random.default_rng(1).standard_normal(16).astype(np.float32)
    model = dfl_model(1, 4, 16, 2100, weights=weights)
    graph = workbench.load(model.SerializeToString())
    x = np.random.default_rng(2).standard_normal((1, 64, 2100)).astype(np.float32) * 30
    theirs = run_onnxruntime(model, {"x": x})["y"]
    for descriptor in VARIANTS:
        ours, _, used = run_with_routine(graph, descriptor, feeds={"x": x})
        assert used == ["dfl/conv"]
        assert relative_error(ours["y"], theirs) <= 1e-5, descriptor


@pytest.mark.parametrize("descriptor", VARIANTS)
def test_nan_and_inf_as_onnxruntime(descriptor):
    model = dfl_model(1, 4, 16, 300)
    graph = workbench.load(model.SerializeToString())
    x = np.random.default_rng(0).standard_normal((1, 64, 300)).astype(np.float32)
    x[0, 3, 7] = np.nan        # side 0, bin 3
    x[0, 16, 9] = np.nan       # side 1, bin 0: the first bin (the running maximum starts there)
    x[0, 40, 11] = np.inf      # side 2
    x[0, 50, 13] = -np.inf     # side 3: an empty bin, the rest finite
    ours, _, used = run_with_routine(graph, descriptor, feeds={"x": x})
    assert used == ["dfl/conv"]
    theirs = run_onnxruntime(model, {"x": x})["y"]
    assert np.isnan(theirs).sum() == 3
    np.testing.assert_array_equal(np.isnan(ours["y"]), np.isnan(theirs))
    finite = np.isfinite(theirs)
    np.testing.assert_array_equal(finite, np.isfinite(ours["y"]))
    np.testing.assert_allclose(ours["y"][finite], theirs[finite], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("column", [True, False])
@pytest.mark.parametrize("bias", [False, True])
def test_softmax_then_matmul_by_a_column(column, bias):
    """GFL's integral (PicoDet, NanoDet): softmax over the last axis, then MatMul by the bin values;
    a bias added after a MatMul by a column joins the layer too (passes/fuse_matmul_bias.py runs
    first; a 1-D right operand gives a product without the column axis, whose Add stays)."""
    proj = np.linspace(0, 7, 8, dtype=np.float32)
    nodes = [helper.make_node("Softmax", ["x"], ["p"], name="integral/softmax", axis=-1),
             helper.make_node("MatMul", ["p", "proj"], ["d" if bias else "y"], name="integral")]
    inits = [("proj", proj.reshape(8, 1) if column else proj)]
    if bias:
        nodes.append(helper.make_node("Add", ["d", "b"], ["y"], name="integral.add"))
        inits.append(("b", np.float32([0.5])))
    model = make_model(nodes, [("x", [3, 40, 8])], [("y", None)], inits)
    graph, _ = assert_matches_onnxruntime(model)
    assert [l.op for l in graph] == ["SoftmaxDot"] + (["Add"] if bias and not column else [])
    assert graph.layer("integral").attrs["fusion"] == "softmax+matmul"
    for descriptor in VARIANTS:
        assert_routine_matches(graph, descriptor, layers=["integral"], expect_layers=["integral"])
    check_round_trip(graph, model)


@pytest.mark.parametrize("what", ["two_readers", "two_channels", "other_axis", "coerced", "padded", "reorders"])
def test_left_alone_where_it_would_change_the_result(what):
    """A softmax whose output is read elsewhere, a Conv with more than one output, one that does not
    reduce the softmax axis, a pre-13 Softmax over the flattened tail, a padded Conv: no SoftmaxDot.
    A Transpose that reorders the other axes stays a layer of its own, before the SoftmaxDot."""
    rng = np.random.default_rng(3)
    shape = [1, 6, 5, 7]
    perm = [0, 2, 1, 3] if what != "reorders" else [0, 2, 3, 1]
    tshape = [shape[p] for p in perm]
    m = 2 if what == "two_channels" else 1
    w = rng.standard_normal((m, tshape[1], 1, 1)).astype(np.float32)
    axis = 2 if what == "other_axis" else 1
    conv_attrs = dict(kernel_shape=[1, 1], pads=[1, 1, 1, 1] if what == "padded" else [0, 0, 0, 0])
    nodes = [helper.make_node("Transpose", ["x"], ["t"], name="tr", perm=perm),
             helper.make_node("Softmax", ["t"], ["p"], name="sm", axis=axis),
             helper.make_node("Conv", ["p", "w"], ["y"], name="conv", **conv_attrs)]
    outputs = [("y", None)]
    if what == "two_readers":
        outputs.append(("p", None))
    model = make_model(nodes, [("x", shape)], outputs, [("w", w)], opset=11 if what == "coerced" else 13)
    graph, _ = assert_matches_onnxruntime(model)
    if what == "reorders":
        assert [l.op for l in graph] == ["Transpose", "SoftmaxDot"]
        assert graph.layer("conv").attrs == {"axis": 1, "fusion": "softmax+conv"}
        check_round_trip(graph, model)
    else:
        assert "SoftmaxDot" not in graph.op_counts() and "Softmax" in graph.op_counts()


def test_torch_export_of_the_decode(tmp_path):
    """Ultralytics' DFL module through PyTorch's exporter: one SoftmaxDot, matching PyTorch."""
    torch = pytest.importorskip("torch", reason="torch not installed: PyTorch export tests need the 2.13.0 CPU wheel")
    import warnings
    import onnx

    class DFL(torch.nn.Module):
        def __init__(self, c1=16):
            super().__init__()
            self.conv = torch.nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
            self.conv.weight.data[:] = torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1)
            self.c1 = c1

        def forward(self, x):
            b, _, a = x.shape
            return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)

    model = DFL().eval()
    path = tmp_path / "dfl.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 64, 2100),), str(path), input_names=["x"], opset_version=17,
                          dynamo=False)
    onnx_model = onnx.load(str(path))
    graph, ours = assert_matches_onnxruntime(onnx_model)
    assert graph.op_counts()["SoftmaxDot"] == 1 and "Softmax" not in graph.op_counts()
    x = workbench.random_inputs(graph, seed=0)["x"]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert relative_error(next(iter(ours.values())), ref) <= 1e-5
    for descriptor in VARIANTS:
        assert_routine_matches(graph, descriptor)
    check_round_trip(graph, onnx_model)
