"""The qint8 routines that keep a network in qint8 between its convolutions (routines/eltwise_q8.py,
tensor_ops_q8.py) and the convolution epilogue's residual after an activation, against NumPy
formulas on the dequantized integers: uint8 outputs within 1 LSB of the requantized reference
(the tables exact but for float32 against float64 rounding), float32 outputs to float32
rounding, integer moves exact; both layouts, zero points away from 0, broadcasts."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from onnx import helper

import workbench
from onnx_helpers import make_model
from routine_helpers import conv_graph
from workbench import routines
from workbench.ir.graph import NCHW, NHWC
from workbench.ir.quant import QuantParams, QuantTable
from workbench.routines import adapts
from workbench.routines.qint8 import kernels
from workbench.tuning.ranges import share_passthrough

pytestmark = pytest.mark.skipif(kernels() is None, reason="this CPU or build lacks AVX512-VNNI: no qint8 routine")


def _u8(scale, zero):
    return QuantParams((scale,), (zero,), "uint8")


def _graph(nodes, inputs, outputs, inits=()):
    return workbench.load(make_model(nodes, inputs, [(o, None) for o in outputs], initializers=list(inits)).SerializeToString())


def _nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)) if a.ndim == 4 else a


def _run(descriptor, layer, graph, args, threads=2):
    r = routines.get(layer.op, descriptor)
    assert r.applies(layer, graph.input_specs(layer)), descriptor
    state = routines.prepared(r, layer, graph.input_specs(layer), threads, quant=graph.quant)
    outs = []
    for spec, fmt in zip(layer.out_specs, r.output_formats(layer) * len(layer.out_specs)):
        outs.append(np.full(adapts.physical_shape(spec.with_format(fmt)), 7, np.dtype(fmt.dtype)))
    r.run(layer, state, args, outs, threads)
    return outs


def _requantized(real, p):
    return np.clip(np.rint(real / p.scale[0]) + p.zero_point[0], 0, 255)


def _within_one(got, want, exact_share=0.95):
    diff = np.abs(got.astype(np.int64) - want)
    assert diff.max() <= 1 and (diff == 0).mean() >= exact_share, (diff.max(), (diff == 0).mean())


UNARY = {"Sigmoid": (lambda v: 1 / (1 + np.exp(-v)), {}), "HardSwish": (lambda v: v * np.clip(v / 6 + 0.5, 0, 1), {}),
         "LeakyRelu": (lambda v: np.where(v < 0, 0.2 * v, v), {"alpha": 0.2}), "Tanh": (np.tanh, {}),
         "Exp": (np.exp, {}), "Log": (np.log, {})}


@settings(max_examples=40, deadline=None)
@given(op=st.sampled_from(sorted(UNARY)), layout=st.sampled_from([NCHW, NHWC]), out_float=st.booleans(),
       zx=st.integers(1, 254), zy=st.integers(1, 254), seed=st.integers(0, 2 ** 16))
def test_tables_compute_unary_layers(op, layout, out_float, zx, zy, seed):
    rng = np.random.default_rng(seed)
    fn, attrs = UNARY[op]
    graph = _graph([helper.make_node(op, ["x"], ["y"], name="u", **attrs)], [("x", [1, 5, 7, 9])], ["y"])
    layer = graph.layer("u")
    px, py = _u8(0.0413, zx), _u8(0.0217, zy)
    graph.quant = QuantTable({"x": px, "y": py})
    xq = rng.integers(0, 256, (1, 5, 7, 9), dtype=np.uint8)
    x = (xq.astype(np.float64) - zx) * 0.0413
    with np.errstate(all="ignore"):
        real = fn(x)
    descriptor = f"cpu:qint8:{layout}/table" + ("_f32" if out_float else "")
    got = _run(descriptor, layer, graph, [_nhwc(xq) if layout == NHWC else xq])[0]
    want = _nhwc(real) if layout == NHWC else real
    if out_float:
        np.testing.assert_allclose(got, want, rtol=3e-6, atol=1e-7)   # Log(<= 0): -inf and NaN as in float32
    else:
        _within_one(got, np.nan_to_num(_requantized(want, py), nan=0.0), 0.98)


def test_a_table_takes_scalar_constants_and_chains(rng):
    """``1.5 / x + 0.25`` (a chain of two steps with constants) then a ReLU, as one table; a
    division by zero gives inf, the top of the range."""
    graph = _graph([helper.make_node("Div", ["k", "x"], ["d"], name="div"),
                    helper.make_node("Add", ["d", "c"], ["y"], name="add"), helper.make_node("Relu", ["y"], ["z"], name="r")],
                   [("x", [1, 3, 4, 4])], ["z"], [("k", np.float32(1.5)), ("c", np.array([0.25], np.float32))])
    (layer,) = list(graph)
    assert layer.op == "EltwiseChain"
    px, pz = _u8(0.05, 30), _u8(0.01, 5)
    graph.quant = QuantTable({"x": px, layer.outputs[0]: pz})
    xq = rng.integers(0, 256, (1, 3, 4, 4), dtype=np.uint8)
    xq[0, 0, 0, 0] = 30
    with np.errstate(divide="ignore"):
        real = np.maximum(1.5 / ((xq - 30.0) * 0.05) + 0.25, 0)
    args = [xq if t == "x" else None for t in layer.inputs]
    _within_one(_run("cpu:qint8:nchw/table", layer, graph, args)[0], _requantized(real, pz), 0.98)


SHAPES = [((2, 6, 5, 7), (2, 6, 5, 7)), ((1, 6, 5, 7), (1, 6, 1, 1)), ((1, 6, 5, 7), (1, 1, 5, 7)),
          ((1, 6, 5, 7), (1, 1, 1, 1)), ((1, 1, 1, 7), (1, 6, 5, 7)), ((2, 6, 5, 7), (2, 6, 1, 1))]


@settings(max_examples=40, deadline=None)
@given(op=st.sampled_from(["Add", "Sub", "Mul"]), shapes=st.sampled_from(SHAPES), layout=st.sampled_from([NCHW, NHWC]),
       act=st.sampled_from([None, "Relu", "HardSwish"]), out_float=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_binary_layers_of_two_quantized_tensors(op, shapes, layout, act, out_float, seed):
    rng = np.random.default_rng(seed)
    sa, sb = shapes
    out_shape = np.broadcast_shapes(sa, sb)
    nodes = [helper.make_node(op, ["a", "b"], ["y"], name="bin")]
    if act:
        nodes.append(helper.make_node(act, ["y"], ["z"], name="act"))
    graph = _graph(nodes, [("a", list(sa)), ("b", list(sb))], ["z" if act else "y"])
    layer = graph.layer("bin") if not act else [l for l in graph][0]
    assert len(list(graph)) == 1   # the activation fused
    # scales of no round ratio: sums of round ones tie often, and ties may round either way
    pa, pb = _u8(0.0313, int(rng.integers(1, 255))), _u8(0.0517, int(rng.integers(1, 255)))
    py = _u8(0.2113 if op == "Mul" else 0.0433, int(rng.integers(1, 255)))
    graph.quant = QuantTable({"a": pa, "b": pb, layer.outputs[0]: py})
    aq, bq = rng.integers(0, 256, sa, dtype=np.uint8), rng.integers(0, 256, sb, dtype=np.uint8)
    a, b = pa.dequantize(aq).astype(np.float64), pb.dequantize(bq).astype(np.float64)
    real = {"Add": a + b, "Sub": a - b, "Mul": a * b}[op]
    real = {None: real, "Relu": np.maximum(real, 0), "HardSwish": real * np.clip(real / 6 + 0.5, 0, 1)}[act]
    assert real.shape == out_shape
    descriptor = f"cpu:qint8:{layout}/direct" + ("_f32" if out_float else "")
    conv = _nhwc if layout == NHWC else (lambda v: v)
    got = _run(descriptor, layer, graph, [conv(aq), conv(bq)])[0]
    if out_float:
        np.testing.assert_allclose(got, conv(real), rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(real).max())))
    else:
        _within_one(got, conv(_requantized(real, py)))


@settings(max_examples=30, deadline=None)
@given(layout=st.sampled_from([NCHW, NHWC]), out_float=st.booleans(), zeros=st.lists(st.integers(0, 255), min_size=3,
       max_size=3), widths=st.lists(st.integers(1, 9), min_size=3, max_size=3), seed=st.integers(0, 2 ** 16))
def test_concat_requantizes_each_part_to_the_output(layout, out_float, zeros, widths, seed):
    rng = np.random.default_rng(seed)
    shapes = [(1, c, 4, 5) for c in widths]
    graph = _graph([helper.make_node("Concat", ["p0", "p1", "p2"], ["y"], name="cat", axis=1)],
                   [(f"p{i}", list(s)) for i, s in enumerate(shapes)], ["y"])
    layer = graph.layer("cat")
    py = _u8(0.0513, 100)
    ps = [_u8(0.0217, zeros[0]), py, _u8(0.1109, zeros[2])]   # the second shares the output's: copied
    graph.quant = QuantTable({f"p{i}": p for i, p in enumerate(ps)} | {"y": py})
    qs = [rng.integers(0, 256, s, dtype=np.uint8) for s in shapes]
    real = np.concatenate([p.dequantize(q).astype(np.float64) for p, q in zip(ps, qs)], axis=1)
    conv = _nhwc if layout == NHWC else (lambda v: v)
    got = _run(f"cpu:qint8:{layout}/table" + ("_f32" if out_float else ""), layer, graph, [conv(q) for q in qs])[0]
    if out_float:
        np.testing.assert_allclose(got, conv(real), rtol=1e-6)
    else:
        _within_one(got, conv(_requantized(real, py)), 0.98)
        c0, c1 = widths[0], widths[0] + widths[1]
        np.testing.assert_array_equal(conv(qs[1]), got[..., c0:c1] if layout == NHWC else got[:, c0:c1])


def test_split_slice_and_nearest_resize_move_integers(rng):
    graph = _graph([helper.make_node("Split", ["x"], ["s0", "s1"], name="split", axis=1),
                    helper.make_node("Slice", ["s1", "st", "en", "ax"], ["c"], name="slice"),
                    helper.make_node("Resize", ["c", "", "sc"], ["y"], name="up", mode="nearest")],
                   [("x", [1, 16, 6, 6])], ["s0", "y"],
                   [("st", np.array([1, 2], np.int64)), ("en", np.array([5, 6], np.int64)), ("ax", np.array([2, 3], np.int64)),
                    ("sc", np.array([1, 1, 2, 2], np.float32))])
    graph.quant = QuantTable({"x": _u8(0.1, 9), "s1": _u8(0.1, 9), "c": _u8(0.1, 9), "y": _u8(0.1, 9), "s0": _u8(0.3, 1)})
    split, slc, up = graph.layer("split"), graph.layer("slice"), graph.layer("up")
    # an output quantized apart from its input: the moves do not apply
    assert "cpu:qint8:nhwc/copy" not in [r.descriptor for r in routines.applicable(graph, split, ["qint8"])]
    share_passthrough(graph)
    assert graph.quant["s0"] == graph.quant["x"]
    assert "cpu:qint8:nhwc/copy" in [r.descriptor for r in routines.applicable(graph, split, ["qint8"])]
    xq = rng.integers(0, 256, (1, 16, 6, 6), dtype=np.uint8)
    s0, s1 = _run("cpu:qint8:nhwc/copy", split, graph, [_nhwc(xq)])
    np.testing.assert_array_equal(s0, _nhwc(xq[:, :8]))
    np.testing.assert_array_equal(s1, _nhwc(xq[:, 8:]))
    c = _run("cpu:qint8:nhwc/gather", slc, graph, [s1, None, None, None])[0]
    np.testing.assert_array_equal(c, _nhwc(xq[:, 8:, 1:5, 2:6]))
    y = _run("cpu:qint8:nhwc/gather", up, graph, [c, None, None])[0]
    np.testing.assert_array_equal(y, _nhwc(xq[:, 8:, 1:5, 2:6].repeat(2, axis=2).repeat(2, axis=3)))


@pytest.mark.parametrize("act", ["Relu", "HardSwish"])
@pytest.mark.parametrize("out_float", [False, True])
def test_a_residual_after_the_activation(act, out_float, rng):
    """YOLO's bottleneck: ``x + act(conv(x))``, the activation before the residual."""
    c = 8
    w = rng.standard_normal((c, c, 3, 3)).astype(np.float32) * 0.2
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node(act, ["c"], ["a"], name="act"), helper.make_node("Add", ["a", "x"], ["y"], name="add")]
    graph = _graph(nodes, [("x", [1, c, 6, 6])], ["y"], [("w", w)])
    (layer,) = list(graph)
    assert layer.attrs.get("residual_after_activation")
    px, py = _u8(0.05, 120), _u8(0.08, 60)
    graph.quant = QuantTable({"x": px, "y": py})
    xq = rng.integers(0, 256, (1, c, 6, 6), dtype=np.uint8)
    x = px.dequantize(xq).astype(np.float64)
    wq = np.rint(w / (np.abs(w).reshape(c, -1).max(axis=1) / 127)[:, None, None, None])
    sw = np.abs(w).reshape(c, -1).max(axis=1) / 127
    xp = np.pad(xq.astype(np.float64) - 120, ((0, 0), (0, 0), (1, 1), (1, 1)))
    conv = np.zeros((1, c, 6, 6))
    for i in range(3):
        for j in range(3):
            conv += np.einsum("nchw,oc->nohw", xp[:, :, i:i + 6, j:j + 6], wq[:, :, i, j])
    conv *= (0.05 * sw)[None, :, None, None]
    real = {"Relu": np.maximum(conv, 0), "HardSwish": conv * np.clip(conv / 6 + 0.5, 0, 1)}[act] + x
    res = _nhwc(x.astype(np.float32)) if out_float else _nhwc(xq)
    got = _run("cpu:qint8:nhwc/gemm_vnni" + ("_f32" if out_float else ""), layer, graph, [_nhwc(xq), None, None, res])[0]
    if out_float:
        np.testing.assert_allclose(got, _nhwc(real), rtol=1e-5, atol=1e-4)
    else:
        _within_one(got, _nhwc(_requantized(real, py)))
