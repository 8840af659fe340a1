"""The qint8 routines (routines/conv_q8.py, pool_q8.py, linalg_q8.py) and the quantize adapts (adapts.py)
against a NumPy integer reference: the int32 sums exact, uint8 outputs within 1 LSB of the
requantized reference, float32 outputs (a fused dequantize) to float32 rounding of it; zero
points away from 0, both output types, residuals, clamps and odd geometries."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from routine_helpers import conv_graph
from workbench import routines
from workbench.ir.formats import Format
from workbench.ir.graph import NCHW, NHWC, TensorSpec
from workbench.ir.quant import QuantError, QuantParams, QuantTable
from workbench.routines import adapts
from workbench.routines.qint8 import kernels

needs_vnni = pytest.mark.skipif(kernels() is None, reason="this CPU or build lacks AVX512-VNNI: no qint8 routine")


def _u8(scale, zero):
    return QuantParams((scale,), (zero,), "uint8")


def _weights_reference(w):
    """Symmetric per-output-channel int8 weights, as the routines must quantize them."""
    flat = w.reshape(w.shape[0], -1).astype(np.float64)
    s = np.abs(flat).max(axis=1) / 127
    s[s == 0] = 1
    return np.rint(flat / s[:, None]).astype(np.int64).reshape(w.shape), s


def _conv_sums(xq, zx, wq, strides, pads, group):
    """int64 sums of (x - zx) * w, NHWC ``xq``, weights (O, C/g, KH, KW), padding as real zero."""
    n, h, wd, c = xq.shape
    o, cg, kh, kw = wq.shape
    (sh, sw), (pt, pl, pb, pr) = strides, pads
    x = np.zeros((n, h + pt + pb, wd + pl + pr, c), np.int64)
    x[:, pt:pt + h, pl:pl + wd] = xq.astype(np.int64) - zx
    oh, ow = (h + pt + pb - kh) // sh + 1, (wd + pl + pr - kw) // sw + 1
    out = np.zeros((n, oh, ow, o), np.int64)
    per = o // group
    for i in range(kh):
        for j in range(kw):
            win = x[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]   # (n, oh, ow, c)
            for g in range(group):
                out[..., g * per:(g + 1) * per] += win[..., g * cg:(g + 1) * cg] @ wq[g * per:(g + 1) * per, :, i, j].T
    return out


#: NumPy formulas of the activations (routine_helpers' parameters): a clamp or computed in real units.
ACT = {None: lambda v: v, "Relu": lambda v: np.maximum(v, 0), "Clip": lambda v: np.clip(v, -0.4, 0.9),
       "LeakyRelu": lambda v: np.where(v < 0, 0.15 * v, v), "HardSigmoid": lambda v: np.clip(0.3 * v + 0.4, 0, 1),
       "HardSwish": lambda v: v * np.clip(v / 6 + 0.5, 0, 1), "Sigmoid": lambda v: 1 / (1 + np.exp(-v)),
       "Tanh": np.tanh}


def _run(descriptor, layer, graph, args, out_dtype, threads=2):
    r = routines.get(layer.op, descriptor)
    state = routines.prepared(r, layer, graph.input_specs(layer), threads, quant=graph.quant)
    fmt = r.output_formats(layer)[0]
    assert fmt.dtype == np.dtype(out_dtype).name
    out = np.full(adapts.physical_shape(layer.out_specs[0].with_format(fmt)), 7, out_dtype)
    r.run(layer, state, args, [out], threads)
    return out


@needs_vnni
@settings(max_examples=30, deadline=None)
@given(c=st.integers(1, 40), o=st.integers(1, 40), k=st.sampled_from([1, 3, 5]), s=st.sampled_from([1, 2]),
       pad=st.integers(0, 2), act=st.sampled_from(sorted(ACT, key=str)), residual=st.booleans(),
       out_float=st.booleans(), threads=st.sampled_from([1, 2]), seed=st.integers(0, 2 ** 16))
def test_conv_matches_the_integer_reference(c, o, k, s, pad, act, residual, out_float, threads, seed):
    rng = np.random.default_rng(seed)
    h, w_ = 6 + seed % 5, 7 + seed % 3
    if (h + 2 * pad - k) < 0 or (w_ + 2 * pad - k) < 0:
        return
    w = rng.standard_normal((o, c, k, k)).astype(np.float32)
    w[0] = 0 if o > 1 else w[0]   # an all-zero channel: scale 1, sums 0
    b = rng.standard_normal(o).astype(np.float32)
    graph = conv_graph((2, c, h, w_), w, b, dict(strides=[s, s], pads=[pad] * 4), activation=act, residual=residual)
    layer = graph.layer("conv")
    px, po, pr = _u8(0.05, int(rng.integers(1, 255))), _u8(0.2, int(rng.integers(1, 255))), _u8(0.1, 77)
    graph.quant = QuantTable({layer.inputs[0]: px, layer.outputs[0]: po} | ({layer.inputs[3]: pr} if residual else {}))
    xq = rng.integers(0, 256, (2, h, w_, c), dtype=np.uint8)
    wq, sw = _weights_reference(w)
    sums = _conv_sums(xq, px.zero_point[0], wq, (s, s), (pad,) * 4, 1)
    real = sums * (px.scale[0] * sw) + b
    args = [xq, None, None]
    if residual:
        rq = rng.integers(0, 256, real.shape, dtype=np.uint8)
        rf = rng.standard_normal(real.shape).astype(np.float32)
        real = real + (rf if out_float else (rq.astype(np.float64) - 77) * 0.1)
        args.append(rf if out_float else rq)
    real = ACT[act](real)
    descriptor = "cpu:qint8:nhwc/gemm_vnni" + ("_f32" if out_float else "")
    got = _run(descriptor, layer, graph, args, np.float32 if out_float else np.uint8, threads)
    if out_float:
        np.testing.assert_allclose(got, real, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(real).max())))
    else:
        want = np.clip(np.rint(real / 0.2) + po.zero_point[0], 0, 255)
        diff = np.abs(got.astype(np.int64) - want)
        assert diff.max() <= 1 and (diff == 0).mean() > 0.95


@needs_vnni
@settings(max_examples=20, deadline=None)
@given(c=st.integers(1, 50), k=st.sampled_from([3, 5]), s=st.sampled_from([1, 2]), act=st.sampled_from(sorted(ACT, key=str)),
       out_float=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_depthwise_matches_the_integer_reference(c, k, s, act, out_float, seed):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((c, 1, k, k)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    graph = conv_graph((1, c, 9, 10), w, b, dict(group=c, strides=[s, s], pads=[k // 2] * 4), activation=act)
    layer = graph.layer("conv")
    px, po = _u8(0.03, int(rng.integers(1, 255))), _u8(0.1, int(rng.integers(1, 255)))
    graph.quant = QuantTable({layer.inputs[0]: px, layer.outputs[0]: po})
    xq = rng.integers(0, 256, (1, 9, 10, c), dtype=np.uint8)
    wq, sw = _weights_reference(w)
    real = _conv_sums(xq, px.zero_point[0], wq, (s, s), (k // 2,) * 4, c) * (px.scale[0] * sw) + b
    real = ACT[act](real)
    got = _run("cpu:qint8:nhwc/depthwise_vnni" + ("_f32" if out_float else ""), layer, graph, [xq, None, None],
               np.float32 if out_float else np.uint8)
    if out_float:
        np.testing.assert_allclose(got, real, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(real).max())))
    else:
        diff = np.abs(got.astype(np.int64) - np.clip(np.rint(real / 0.1) + po.zero_point[0], 0, 255))
        assert diff.max() <= 1 and (diff == 0).mean() > 0.95


def _model(nodes, inputs, outputs, consts):
    import workbench
    from onnx_helpers import make_model
    return workbench.load(make_model(nodes, inputs, outputs, consts).SerializeToString())


@needs_vnni
@pytest.mark.parametrize("out_float", [False, True])
@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_matches_the_integer_reference(out_float, trans_b, rng):
    from onnx import helper
    b = rng.standard_normal((37, 23) if trans_b else (23, 37)).astype(np.float32)
    c = rng.standard_normal(37).astype(np.float32)
    graph = _model([helper.make_node("Gemm", ["x", "b", "c"], ["y"], transB=trans_b, alpha=0.5, beta=2.0),
                    ], [("x", [3, 23])], [("y", None)], [("b", b), ("c", c)])
    layer = next(iter(graph))
    px, po = _u8(0.02, 100), _u8(0.3, 131)
    graph.quant = QuantTable({layer.inputs[0]: px, layer.outputs[0]: po})
    xq = rng.integers(0, 256, (3, 23), dtype=np.uint8)
    wq, sw = _weights_reference(0.5 * (b if trans_b else b.T))
    real = ((xq.astype(np.int64) - 100) @ wq.T) * (0.02 * sw) + 2.0 * c
    got = _run("cpu:qint8:nchw/gemm_vnni" + ("_f32" if out_float else ""), layer, graph, [xq, None, None],
               np.float32 if out_float else np.uint8)
    if out_float:
        np.testing.assert_allclose(got, real, rtol=1e-5, atol=1e-5 * float(np.abs(real).max()))
    else:
        diff = np.abs(got.astype(np.int64) - np.clip(np.rint(real / 0.3) + 131, 0, 255))
        assert diff.max() <= 1 and (diff == 0).mean() > 0.9


@needs_vnni
def test_pools_match_the_integer_reference(rng):
    from onnx import helper
    graph = _model([helper.make_node("MaxPool", ["x"], ["m"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
                    helper.make_node("GlobalAveragePool", ["m"], ["y"])], [("x", [2, 70, 9, 8])], [("y", None)], [])
    pool, gap = list(graph)
    px, pg = _u8(0.05, 40), _u8(0.01, 9)
    graph.quant = QuantTable({"x": px, "m": px, "y": pg})
    xq = rng.integers(0, 256, (2, 9, 8, 70), dtype=np.uint8)
    got = _run("cpu:qint8:nhwc/direct", pool, graph, [xq], np.uint8)
    padded = np.zeros((2, 11, 10, 70), np.uint8)   # taps in the padding never win: 0 is the lowest
    padded[:, 1:10, 1:9] = xq
    want = np.max([padded[:, i:i + 9:2, j:j + 8:2] for i in range(3) for j in range(3)], axis=0)
    np.testing.assert_array_equal(got, want)
    mean = (want.astype(np.float64) - 40).mean(axis=(1, 2)) * 0.05
    got = _run("cpu:qint8:nhwc/direct", gap, graph, [want], np.uint8)
    diff = np.abs(got.reshape(2, 70).astype(np.int64) - np.clip(np.rint(mean / 0.01) + 9, 0, 255))
    assert diff.max() <= 1
    f = _run("cpu:qint8:nhwc/direct_f32", gap, graph, [want], np.float32)
    np.testing.assert_allclose(f.reshape(2, 70), mean, rtol=1e-5, atol=1e-6)
    graph.quant["m"] = _u8(0.06, 40)   # MaxPool moves integers: its output must share the input's parameters
    with pytest.raises(QuantError, match="quantized apart from input"):
        routines.prepared(routines.get("MaxPool", "cpu:qint8:nhwc/direct"), pool, graph.input_specs(pool), 1,
                          quant=graph.quant)


@pytest.mark.parametrize("src, dst", [(Format("float32", NCHW), Format("uint8", NCHW)),
                                      (Format("float32", NHWC), Format("uint8", NHWC)),
                                      (Format("float32", NCHW), Format("uint8", NHWC))])
def test_quantize_and_dequantize_adapts_are_quantize_linear(src, dst, rng):
    spec = TensorSpec((2, 5, 6, 7), "float32", src.layout)
    p = _u8(0.037, 131)
    x = (rng.standard_normal(adapts.physical_shape(spec)) * 3).astype(np.float32)
    x.flat[:4] = [np.inf, -np.inf, 0.5 * 0.037, 1.5 * 0.037]   # saturation and ties to even
    moved = src.layout != dst.layout
    hops = adapts.path(spec, dst)
    assert len(hops) == 1 and hops[0].quantized
    q = np.zeros(adapts.physical_shape(spec.with_format(dst)), np.uint8)
    hops[0].run(x, q, 2, p)
    want = p.quantize(x)
    np.testing.assert_array_equal(q, want.transpose(0, 2, 3, 1) if moved else want)
    back = adapts.path(spec.with_format(dst), src)
    assert len(back) == 1 and back[0].quantized
    f = np.zeros(x.shape, np.float32)
    back[0].run(q, f, 2, p)
    np.testing.assert_array_equal(f, p.dequantize(want))
    with pytest.raises(QuantError, match="no quantization parameters"):
        hops[0].run(x, q, 1, None)
