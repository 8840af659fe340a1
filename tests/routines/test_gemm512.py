"""Our AVX-512 SGEMM (kernels_pyx/gemm512.pyx, conv_im2col512.pyx, conv_shuffle512.pyx) against NumPy on odd sizes, its refusal of bad
buffers, and the gemm1x1_avx512, im2col_avx512 and implicit_avx512 routines against the NumPy
reference, epilogues included."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from onnx import helper

import workbench
from onnx_helpers import make_model
from routine_helpers import assert_routine_matches
from workbench.runtime import cpu
from workbench import routines

if not cpu.supports("avx512"):
    pytest.skip("this CPU lacks AVX-512", allow_module_level=True)
g = cpu.kernel_module("gemm512", "avx512")
im2col = cpu.kernel_module("conv_im2col512", "avx512")
shuffle = cpu.kernel_module("conv_shuffle512", "avx512")
if g is None or im2col is None or shuffle is None:
    pytest.skip("workbench._kernels.{gemm512,conv_im2col512,conv_shuffle512}_avx512 are not built",
                allow_module_level=True)

ROUTINES = ("cpu:float32:nchw/gemm1x1_avx512", "cpu:float32:nhwc/gemm1x1_avx512")
IM2COL = ("cpu:float32:nchw/im2col_avx512", "cpu:float32:nhwc/im2col_avx512", "cpu:float32:nhwc/implicit_avx512")
SETTINGS = dict(deadline=None, derandomize=True, database=None)


def _rel_err(got, want):
    return float(np.abs(got.astype(np.float64) - want).max()) / max(float(np.abs(want).max()), 1.0)


@settings(max_examples=30, **SETTINGS)
@given(st.integers(1, 300), st.integers(1, 300), st.integers(1, 300), st.booleans(), st.booleans(),
       st.sampled_from([1, 2, 3]), st.integers(0, 2 ** 16))
def test_sgemm_matches_numpy(m, n, k, trans_b, accumulate, threads, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    c0 = rng.standard_normal((m, n)).astype(np.float32)
    c = c0.copy()
    assert g.sgemm(a, b, c, trans_b=trans_b, accumulate=accumulate, num_threads=threads) is c
    want = a.astype(np.float64) @ (b.T if trans_b else b).astype(np.float64) + (c0 if accumulate else 0)
    assert _rel_err(c, want) < 1e-5


@pytest.mark.parametrize("m", [1, 13, 15, 16, 25, 49, 145, 148, 292])
@pytest.mark.parametrize("k", [600, 259])
@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_sgemm_tail_strips(m, k, accumulate, threads):
    """Row counts that end in a strip of 1 (the one-row kernel, a GEMV at m = 1) to 4 rows (the
    4-row tail kernel), with several K blocks (so partial sums are loaded back; 259 leaves a
    block of 3, under the one-row kernel's 4-step unroll) and a ragged last column panel."""
    rng = np.random.default_rng(m)
    n = 70
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    c0 = rng.standard_normal((m, n)).astype(np.float32)
    c = c0.copy()
    g.sgemm(a, b, c, accumulate=accumulate, num_threads=threads)
    want = a.astype(np.float64) @ b.astype(np.float64) + (c0 if accumulate else 0)
    assert _rel_err(c, want) < 1e-5


@pytest.mark.parametrize("m,n", [(49, 160), (49, 1280), (40, 60), (196, 96), (480, 480), (1000, 16), (7, 700)])
def test_sgemm_parts_cover_c_once(m, n):
    """C cut into row x column parts (chosen per shape and thread count, then remembered): with
    accumulate, a block computed twice or skipped shows in the sum.  The same shape at 1 to 4
    threads, twice each, so that a remembered choice is reused and never crosses thread counts."""
    rng = np.random.default_rng(m * n)
    k = 300
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    c0 = rng.standard_normal((m, n)).astype(np.float32)
    want = a.astype(np.float64) @ b.astype(np.float64) + c0
    for threads in (1, 2, 3, 4, 2, 1, 4, 3):
        c = c0.copy()
        g.sgemm(a, b, c, accumulate=True, num_threads=threads)
        assert _rel_err(c, want) < 1e-5, threads


def test_baseline_build_is_scalar_but_correct():
    base = cpu.kernel_module("gemm512")
    if base is None:
        pytest.skip("baseline gemm512 not built")
    assert not base.available and g.available
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((37, 50)).astype(np.float32), rng.standard_normal((50, 45)).astype(np.float32)
    c = np.empty((37, 45), np.float32)
    base.sgemm(a, b, c)
    assert _rel_err(c, a.astype(np.float64) @ b) < 1e-5


def _f32(*shape):
    return np.zeros(shape, np.float32)


@pytest.mark.parametrize("call, error", [
    (lambda: g.sgemm(_f32(3, 4), _f32(5, 6), _f32(3, 6)), ValueError),
    (lambda: g.sgemm(_f32(3, 4), _f32(4, 6), _f32(3, 7)), ValueError),
    (lambda: g.sgemm(_f32(3, 4), _f32(4, 6), _f32(3, 6), trans_b=True), ValueError),
    (lambda: g.sgemm(_f32(3, 4), _f32(4, 6).astype(np.float64), _f32(3, 6)), TypeError),
    (lambda: g.sgemm(_f32(4, 3).T, _f32(4, 6), _f32(3, 6)), ValueError),
    (lambda: g.sgemm(_f32(3, 4), _f32(4, 6), _f32(6, 3).T), ValueError),
    (lambda: g.sgemm(_f32(3, 4), [[0.0] * 6] * 4, _f32(3, 6)), TypeError),
    (lambda: g.sgemm(_f32(3, 4, 1), _f32(4, 6), _f32(3, 6)), ValueError),
    (lambda: g.sgemm(_f32(3, 4), _f32(4, 6), _f32(3, 6), num_threads=0), ValueError),
    (lambda: (lambda c: g.sgemm(c[:, :4], _f32(4, 4), c))(_f32(4, 4)), ValueError),
    (lambda: g.conv1x1_nhwc(_f32(1, 3, 3, 8), np.zeros(10, np.float32), None, None, _f32(1, 3, 3, 5)),
     ValueError),
    (lambda: g.conv1x1_nhwc(_f32(1, 3, 3, 8), g.pack_b(_f32(8, 5)), None, None, _f32(1, 3, 4, 5)), ValueError),
    (lambda: g.conv1x1_nhwc(_f32(1, 3, 3, 8), g.pack_b(_f32(8, 5)), _f32(4), None, _f32(1, 3, 3, 5)),
     ValueError),
    (lambda: g.conv1x1_nhwc(_f32(1, 3, 3, 8), g.pack_b(_f32(8, 5)), None, None, _f32(1, 3, 3, 5), act=7),
     ValueError),
    (lambda: g.conv1x1_nchw(_f32(1, 8, 3, 3), _f32(5, 7), None, None, _f32(1, 5, 3, 3)), ValueError),
    (lambda: g.conv1x1_nchw(_f32(1, 8, 3, 3), _f32(5, 8), None, _f32(1, 5, 3, 4), _f32(1, 5, 3, 3)),
     ValueError),
])
def test_bad_buffers_raise(call, error):
    with pytest.raises(error):
        call()


def conv_graph(x_shape, m, seed, bias=True, residual=False, activation=None, strides=(1, 1), group=1,
               kernel=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1)):
    rng = np.random.default_rng(seed)
    c = x_shape[1]
    w = rng.standard_normal((m, c // group, *kernel)).astype(np.float32)
    inits = [("w", w)] + ([("b", rng.standard_normal(m).astype(np.float32))] if bias else [])
    nodes = [helper.make_node("Conv", ["x", "w"] + (["b"] if bias else []), ["y0"], name="conv",
                              kernel_shape=list(kernel), strides=list(strides), group=group, pads=list(pads),
                              dilations=list(dilations))]
    inputs, last = [("x", list(x_shape))], "y0"
    out_shape = [x_shape[0], m] + [(x_shape[2 + i] + pads[i] + pads[i + 2] - (kernel[i] - 1) * dilations[i] - 1)
                                   // strides[i] + 1 for i in range(2)]
    if residual:
        inputs.append(("skip", out_shape))
        nodes.append(helper.make_node("Add", [last, "skip"], ["y1"], name="add"))
        last = "y1"
    if activation is not None:
        args = [last]
        if activation == "PRelu":
            inits.append(("slope", np.linspace(-0.5, 0.7, m, dtype=np.float32).reshape(m, 1, 1)))
            args.append("slope")
        elif activation == "Clip":
            inits += [("lo", np.float32(-0.4)), ("hi", np.float32(0.9))]
            args += ["lo", "hi"]
        if activation == "Silu":   # as exporters write them
            nodes += [helper.make_node("Sigmoid", args, ["sig"], name="sig"),
                      helper.make_node("Mul", [last, "sig"], ["y"], name="act")]
        elif activation == "Gelu":
            inits += [("sqrt2", np.float32(np.sqrt(2))), ("one", np.float32(1)), ("half", np.float32(0.5))]
            nodes += [helper.make_node("Div", [last, "sqrt2"], ["g0"], name="g0"),
                      helper.make_node("Erf", ["g0"], ["g1"], name="g1"),
                      helper.make_node("Add", ["g1", "one"], ["g2"], name="g2"),
                      helper.make_node("Mul", [last, "g2"], ["g3"], name="g3"),
                      helper.make_node("Mul", ["g3", "half"], ["y"], name="act")]
        else:
            nodes.append(helper.make_node(activation, args, ["y"], name="act"))
        last = "y"
    model = make_model(nodes, inputs, [(last, None)], initializers=inits)
    return workbench.load(model.SerializeToString())


@pytest.mark.parametrize("descriptor", ROUTINES)
@pytest.mark.parametrize("x_shape, m, kw", [
    ([1, 37, 9, 11], 70, dict()),
    ([2, 64, 7, 7], 33, dict(bias=False, activation="Relu")),
    ([1, 300, 5, 13], 145, dict(residual=True, activation="Relu")),
    ([3, 17, 6, 5], 530, dict(residual=True)),
    ([1, 8, 20, 21], 16, dict(activation="Clip")),
    ([1, 24, 4, 4], 40, dict(activation="PRelu")),
    ([1, 24, 4, 4], 40, dict(activation="HardSwish", residual=True)),
    ([1, 24, 9, 7], 20, dict(activation="HardSigmoid")),
    ([1, 16, 9, 7], 48, dict(activation="HardSwish")),
    ([1, 48, 9, 13], 96, dict(activation="Gelu")),   # GELU and SiLU as exporters write them
    ([1, 20, 6, 11], 24, dict(activation="Silu", residual=True)),
    # Enough pixels (35 strips of 12) for threads to split C by contiguous rows, 2 or 3 ranges
    # that end inside a 144-row block.
    ([1, 40, 20, 21], 70, dict(residual=True, activation="Relu")),
])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_routines_match_reference(descriptor, x_shape, m, kw, threads):
    graph = conv_graph(x_shape, m, seed=x_shape[1] + m, **kw)
    assert_routine_matches(graph, descriptor, expect_layers=["conv"], num_threads=threads, seed=m)


@pytest.mark.parametrize("descriptor", IM2COL)
@pytest.mark.parametrize("x_shape, m, kw", [
    ([1, 5, 9, 11], 7, dict(kernel=(3, 3), pads=(1, 1, 1, 1))),
    ([2, 19, 14, 13], 40, dict(kernel=(3, 3), strides=(2, 2), pads=(1, 0, 1, 2), residual=True,
                               activation="Relu")),
    ([1, 64, 15, 15], 33, dict(kernel=(3, 2), dilations=(2, 1), activation="PRelu")),
    ([3, 3, 30, 31], 16, dict(kernel=(7, 7), strides=(2, 2), pads=(3, 3, 3, 3), activation="Clip")),
    ([1, 40, 6, 6], 50, dict(kernel=(1, 1), strides=(2, 2), bias=False)),
    ([1, 300, 7, 7], 70, dict(kernel=(3, 3), pads=(1, 1, 1, 1), residual=True, activation="HardSwish")),
    # Enough pixel tiles (>= 4 per thread) for the tiled schedule; the cases above, with two
    # threads, gather the whole im2col first and split the GEMM over channels too.
    ([2, 6, 30, 36], 20, dict(kernel=(3, 3), pads=(1, 1, 1, 1), residual=True, activation="Relu")),
    # Output rows wide enough for implicit GEMM's in-place strips of 12 pixels: depth 900 in runs
    # of 300 crossing the 256-deep K blocks; vertical dilation and stride; epilogues that run as a
    # separate pass (HardSwish, PRelu) after the strips.
    ([1, 100, 5, 16], 40, dict(kernel=(3, 3), pads=(1, 1, 1, 1), residual=True, activation="Relu")),
    ([2, 20, 12, 30], 35, dict(kernel=(3, 3), strides=(2, 1), dilations=(2, 1), pads=(2, 1, 2, 1),
                               activation="LeakyRelu")),
    ([1, 12, 6, 40], 24, dict(kernel=(3, 3), pads=(1, 1, 1, 1), residual=True, activation="HardSwish")),
    ([1, 9, 7, 29], 70, dict(kernel=(2, 5), pads=(0, 2, 1, 0), activation="PRelu")),
    # Sigmoid, tanh, SiLU and GELU in the register epilogue; a stride-2 output 20 wide, whose strips of
    # pixel triples run on from one output row into the next (the 10x10 one splits its channels).
    ([1, 16, 40, 40], 48, dict(kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1), activation="Silu")),
    ([1, 64, 10, 10], 80, dict(kernel=(3, 3), pads=(1, 1, 1, 1), residual=True, activation="Sigmoid")),
    ([1, 30, 9, 17], 20, dict(kernel=(3, 3), pads=(1, 1, 1, 1), activation="Tanh")),
    ([1, 24, 8, 30], 40, dict(kernel=(3, 3), pads=(1, 1, 1, 1), residual=True, activation="Gelu")),
])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_im2col_matches_reference(descriptor, x_shape, m, kw, threads):
    graph = conv_graph(x_shape, m, seed=x_shape[1] + m, **kw)
    assert_routine_matches(graph, descriptor, expect_layers=["conv"], num_threads=threads, seed=m)


@pytest.mark.parametrize("kw, gemm1x1, im2col", [
    (dict(), True, False),   # 1x1 stride 1 unpadded: im2col would only copy the input first
    (dict(strides=(2, 2)), False, True),
    (dict(group=2), False, False),
    (dict(kernel=(3, 3)), False, True),
    (dict(pads=(1, 0, 0, 0)), False, True),
])
def test_applies(kw, gemm1x1, im2col):
    graph = conv_graph([1, 8, 9, 9], 6, seed=0, **kw)
    conv = graph.layer("conv")
    for d in ROUTINES + IM2COL:
        want = gemm1x1 if d in ROUTINES else im2col
        assert routines.get("Conv", d).applies(conv, graph.input_specs(conv)) == want, d


@st.composite
def wide_convs(draw):
    kernel = (draw(st.integers(1, 7)), draw(st.integers(1, 7)))
    strides = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilations = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pads = tuple(draw(st.integers(0, 3)) for _ in range(4))
    h = draw(st.integers(max(1, (kernel[0] - 1) * dilations[0] + 1 - pads[0] - pads[2]), 12))
    w = draw(st.integers(max(1, (kernel[1] - 1) * dilations[1] + 1 - pads[1] - pads[3]), 70))
    return dict(x_shape=[draw(st.integers(1, 2)), draw(st.integers(1, 40)), h, w], m=draw(st.integers(1, 70)),
                kernel=kernel, strides=strides, dilations=dilations, pads=pads, bias=draw(st.booleans()),
                residual=draw(st.booleans()),
                activation=draw(st.sampled_from([None, "Relu", "Clip", "LeakyRelu", "HardSwish", "PRelu", "Sigmoid",
                                                 "Tanh", "Silu", "Gelu"])))


@settings(max_examples=40, **SETTINGS)
@given(wide_convs(), st.sampled_from(IM2COL), st.sampled_from([1, 2]))
def test_im2col_and_implicit_on_random_layers(p, descriptor, threads):
    """Random geometry with output rows up to 70 wide, so implicit GEMM mixes in-place strips with
    gathered borders (and, with dilation, does not apply)."""
    x_shape, m = p.pop("x_shape"), p.pop("m")
    graph = conv_graph(x_shape, m, seed=x_shape[1] * 7 + m, **p)
    conv = graph.layer("conv")
    if not routines.get("Conv", descriptor).applies(conv, graph.input_specs(conv)):
        one_by_one = p["kernel"] == (1, 1) and p["strides"] == (1, 1) and not any(p["pads"])
        assert one_by_one or (descriptor.endswith("implicit_avx512") and p["dilations"][1] > 1)
        return
    assert_routine_matches(graph, descriptor, expect_layers=["conv"], num_threads=threads, seed=m)


def test_im2col_bad_weights_raise():
    x, out = _f32(1, 4, 5, 5), _f32(1, 3, 3, 3)
    with pytest.raises(ValueError):
        im2col.conv_im2col(False, x, _f32(3, 35), None, None, out, (3, 3), (1, 1), (1, 1), (0, 0, 0, 0))
    with pytest.raises(ValueError):
        im2col.conv_im2col(True, _f32(1, 5, 5, 4), np.zeros(10, np.float32), None, None, _f32(1, 3, 3, 3), (3, 3),
                      (1, 1), (1, 1), (0, 0, 0, 0))
    with pytest.raises(ValueError):
        im2col.conv_im2col(False, x, _f32(3, 36), None, None, _f32(1, 3, 4, 3), (3, 3), (1, 1), (1, 1), (0, 0, 0, 0))
    with pytest.raises(ValueError, match="implicit GEMM needs NHWC"):
        im2col.conv_im2col(False, x, _f32(3, 36), None, None, out, (3, 3), (1, 1), (1, 1), (0, 0, 0, 0), implicit=True)
    with pytest.raises(ValueError, match="unit horizontal dilation"):
        im2col.conv_im2col(True, _f32(1, 5, 5, 4), g.pack_b(_f32(36, 3)), None, None, _f32(1, 3, 1, 3), (3, 3),
                      (1, 1), (1, 2), (0, 0, 0, 0), implicit=True)


@pytest.mark.parametrize("act, p0", [(1, 0.0), (7, 0.0), (9, 0.0), (3, 0.1)])   # register and separate-pass epilogues
@pytest.mark.parametrize("kind", ["1x1_nhwc", "1x1_nchw", "im2col", "implicit"])
@pytest.mark.parametrize("threads", [1, 2])
def test_residual_after_the_activation(act, p0, kind, threads):
    """``res_post``: out = act(conv + bias) + residual (depth over two K blocks, a ragged last strip
    and panel), against NumPy; the residual may not be the output itself."""
    rng = np.random.default_rng(act * 10 + threads)
    n, c, h, w, m = 1, 300 if kind.startswith("1x1") else 30, 7, 17, 40
    k = 1 if kind.startswith("1x1") else 3
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = (rng.standard_normal((m, c, k, k)) * 0.1).astype(np.float32)
    bias = rng.standard_normal(m).astype(np.float32)
    slope = np.linspace(-0.5, 0.5, m).astype(np.float32)
    pad = k // 2
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    pre = sum(np.einsum("nchw,mc->nmhw", xp[:, :, i:i + h, j:j + w], wt[:, :, i, j]) for i in range(k)
              for j in range(k)) + bias[:, None, None]
    act_of = {1: lambda v: np.maximum(v, 0), 7: lambda v: np.where(v >= 0, v, v * slope[:, None, None]),
              9: lambda v: v / (1 + np.exp(-v)), 3: lambda v: np.where(v >= 0, v, v * p0)}
    res = rng.standard_normal(pre.shape).astype(np.float32)
    want = act_of[act](pre) + res
    if kind == "1x1_nchw":
        out = np.zeros((n, m, h, w), np.float32)
        g.conv1x1_nchw(x, wt.reshape(m, c), bias, res, out, act, p0, 0, slope, threads, res_post=True)
        got = out
        with pytest.raises(ValueError, match="after the activation"):
            g.conv1x1_nchw(x, wt.reshape(m, c), bias, out, out, act, p0, 0, slope, threads, res_post=True)
    else:
        xn, rn = np.ascontiguousarray(x.transpose(0, 2, 3, 1)), np.ascontiguousarray(res.transpose(0, 2, 3, 1))
        out = np.zeros((n, h, w, m), np.float32)
        packed = g.pack_b(np.ascontiguousarray(wt.transpose(0, 2, 3, 1).reshape(m, -1)), trans_b=True)
        if kind == "1x1_nhwc":
            g.conv1x1_nhwc(xn, packed, bias, rn, out, act, p0, 0, slope, threads, res_post=True)
            with pytest.raises(ValueError, match="after the activation"):
                g.conv1x1_nhwc(xn, packed, bias, out, out, act, p0, 0, slope, threads, res_post=True)
        else:
            im2col.conv_im2col(True, xn, packed, bias, rn, out, (k, k), (1, 1), (1, 1), (pad,) * 4, act, p0, 0, slope,
                          threads, kind == "implicit", res_post=True)
        got = out.transpose(0, 3, 1, 2)
    assert _rel_err(got, want) < 1e-5


@pytest.mark.parametrize("nhwc", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
def test_residual_given_as_the_output_is_added_in_place(nhwc, threads):
    """``residual is out``: the product (depth over two K blocks) is accumulated onto it, bias and
    ReLU applied after; a residual that only partly overlaps the output is refused."""
    rng = np.random.default_rng(threads)
    n, c, h, w, m = 2, 300, 9, 23, 40
    x = rng.standard_normal((n, h, w, c) if nhwc else (n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((m, c)).astype(np.float32)
    bias = rng.standard_normal(m).astype(np.float32)
    out = rng.standard_normal((n, h, w, m) if nhwc else (n, m, h, w)).astype(np.float32)
    prod = (np.einsum("nhwc,mc->nhwm", x, wt) + bias if nhwc
            else np.einsum("nchw,mc->nmhw", x, wt) + bias[:, None, None])
    want = np.maximum(prod + out.astype(np.float64), 0)
    if nhwc:
        g.conv1x1_nhwc(x, g.pack_b(wt, trans_b=True), bias, out, out, 1, num_threads=threads)
    else:
        g.conv1x1_nchw(x, wt, bias, out, out, 1, num_threads=threads)
    assert _rel_err(out, want) < 1e-5
    shifted = np.zeros(out.size + 1, np.float32)
    with pytest.raises(ValueError, match="overlaps"):
        if nhwc:
            g.conv1x1_nhwc(x, g.pack_b(wt, trans_b=True), bias, shifted[1:].reshape(out.shape),
                           shifted[:-1].reshape(out.shape), 1, num_threads=threads)
        else:
            g.conv1x1_nchw(x, wt, bias, shifted[1:].reshape(out.shape), shifted[:-1].reshape(out.shape), 1,
                           num_threads=threads)


def test_conv_transpose_shuffle_matches_numpy_and_refuses_bad_buffers():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)            # (N, H, W, C)
    for m in (4, 8):   # 24 GEMM columns: one panel, the narrow path; 48: written in place
        w = rng.standard_normal((6, 2, 3, m)).astype(np.float32)        # (C, KH, KW, M)
        bias = rng.standard_normal(m).astype(np.float32)
        want = np.einsum("nhwc,cijm->nhiwjm", x, w).reshape(2, 6, 15, m) + bias
        wp = shuffle.pack(w)
        assert wp.size == shuffle.packed_floats(6, 2, 3, m)
        for threads in (1, 2):
            out = np.full((2, 6, 15, m), np.nan, np.float32)
            shuffle.conv_transpose_shuffle_nhwc(x, wp, out, np.tile(bias, 3), 2, 3, num_threads=threads)
            assert _rel_err(out, want) < 1e-5
    with pytest.raises(ValueError, match="gives"):
        shuffle.conv_transpose_shuffle_nhwc(x, wp, _f32(2, 6, 14, 8), None, 2, 3)
    with pytest.raises(ValueError, match="packed weights"):
        shuffle.conv_transpose_shuffle_nhwc(x, wp[:10], _f32(2, 6, 15, 8), None, 2, 3)
    with pytest.raises(ValueError, match="bias"):
        shuffle.conv_transpose_shuffle_nhwc(x, wp, _f32(2, 6, 15, 8), np.tile(bias, 6), 2, 3)
    with pytest.raises(ValueError, match="positive"):
        shuffle.conv_transpose_shuffle_nhwc(x, wp, _f32(2, 6, 15, 8), None, 0, 3)


def test_overlapping_buffers_are_refused_contiguous_or_not():
    x = np.ones((1, 4, 4, 8), np.float32)
    wp = g.pack_b(np.ones((8, 8), np.float32))
    big = np.zeros(2 * 128, np.float32)
    out = big[:128].reshape(1, 4, 4, 8)
    with pytest.raises(ValueError, match="overlaps"):
        g.conv1x1_nhwc(out, wp, None, None, out)                                  # in place, not as residual
    with pytest.raises(ValueError, match="overlaps"):
        g.conv1x1_nhwc(x, wp, big[120:128], None, big[:128].reshape(1, 4, 4, 8))  # bias inside the output
    g.conv1x1_nhwc(x, wp, big[128:136], None, out)                                # adjacent: fine
    np.testing.assert_allclose(out, 8 + 0 * out)
    a, c = np.ones((4, 8), np.float32), np.zeros((8, 8), np.float32)
    with pytest.raises(ValueError, match="overlaps"):
        g.sgemm(c[:4], c, c[4:])                                                  # a and c share rows


def _hard_swish(v):
    return v * np.clip(v / 6 + 0.5, 0, 1)


@pytest.mark.parametrize("m, k, n", [(49, 40, 37), (13, 300, 16), (3, 20, 70), (150, 600, 9), (1, 8, 33)])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_post_activation_affine_matches_numpy(m, k, n, threads):
    """``post``: act(x @ W^T + bias) * scale + shift per output channel, through the register
    epilogue of full strips (12x32 and 12x16 kernels), short tail strips and several K blocks."""
    rng = np.random.default_rng(m + k + n)
    x = rng.standard_normal((1, 1, m, k)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    bias, scale, shift = (rng.standard_normal(n).astype(np.float32) for _ in range(3))
    out = np.full((1, 1, m, n), np.nan, np.float32)
    g.conv1x1_nhwc(x, g.pack_b(w, trans_b=True), bias, None, out, 5, num_threads=threads, post=(scale, shift))
    want = _hard_swish(x.reshape(m, k).astype(np.float64) @ w.T.astype(np.float64) + bias) * scale + shift
    assert _rel_err(out.reshape(m, n), want) < 1e-5
    bound = np.full_like(out, np.nan)
    g.Conv1x1Nhwc(x, g.pack_b(w, trans_b=True), bias, None, bound, 5, post=(scale, shift))(threads)
    np.testing.assert_array_equal(bound, out)


@pytest.mark.parametrize("implicit", [False, True])
def test_post_activation_affine_in_im2col_and_implicit_convs(implicit):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 9, 14, 8)).astype(np.float32)   # NHWC
    w = rng.standard_normal((20, 8, 3, 3)).astype(np.float32)
    bias, scale, shift = (rng.standard_normal(20).astype(np.float32) for _ in range(3))
    wp = g.pack_b(np.ascontiguousarray(w.transpose(0, 2, 3, 1).reshape(20, -1)), trans_b=True)
    out = np.full((2, 9, 14, 20), np.nan, np.float32)
    im2col.conv_im2col(True, x, wp, bias, None, out, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), 1, num_threads=2,
                  implicit=implicit, post=(scale, shift))
    xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    ref = sum(xp[:, i:i + 9, j:j + 14] @ w[:, :, i, j].T.astype(np.float64) for i in range(3) for j in range(3))
    want = np.maximum(ref + bias, 0) * scale + shift
    assert _rel_err(out, want) < 1e-5


def test_post_activation_affine_refusals():
    x, w = np.ones((1, 1, 4, 8), np.float32), np.ones((6, 8), np.float32)
    out, v = np.zeros((1, 1, 4, 6), np.float32), np.ones(6, np.float32)
    with pytest.raises(ValueError, match="activation the register epilogue"):
        g.conv1x1_nhwc(x, g.pack_b(w, trans_b=True), None, None, out, 7, slope=v, post=(v, v))
    with pytest.raises(ValueError, match=r"shape \(6,\)"):
        g.conv1x1_nhwc(x, g.pack_b(w, trans_b=True), None, None, out, 1, post=(v[:5], v[:5]))
    with pytest.raises(ValueError, match="NHWC"):
        im2col.conv_im2col(False, np.ones((1, 8, 3, 3), np.float32), np.ones((6, 72), np.float32), None, None,
                      np.zeros((1, 6, 3, 3), np.float32), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), 1, post=(v, v))


@pytest.mark.parametrize("threads", [1, 2])
def test_conv1x1_reads_and_writes_channel_slices(threads):
    """Input, residual and output as channel slices of wider NHWC buffers (a Concat's parts, a
    Split's views), two of them interleaved in one buffer: the same as on contiguous arrays, and
    the channels around each slice untouched."""
    rng = np.random.default_rng(11)
    n, h, w, c, m = 2, 7, 9, 40, 36
    buf = rng.standard_normal((n, h, w, c + m + 8)).astype(np.float32)
    x, out = buf[..., 3:3 + c], buf[..., c + 5:c + 5 + m]
    residual = rng.standard_normal((n, h, w, m + 5)).astype(np.float32)[..., 2:2 + m]
    wt = rng.standard_normal((m, c)).astype(np.float32)
    bias = rng.standard_normal(m).astype(np.float32)
    want = np.maximum(np.einsum("nhwc,mc->nhwm", x.astype(np.float64), wt) + bias + residual, 0)
    before = buf.copy()
    g.conv1x1_nhwc(x, g.pack_b(wt, trans_b=True), bias, residual, out, 1, num_threads=threads)
    assert _rel_err(out, want) < 1e-5
    keep = np.ones(buf.shape[-1], bool)
    keep[c + 5:c + 5 + m] = False
    np.testing.assert_array_equal(buf[..., keep], before[..., keep])


@pytest.mark.parametrize("implicit", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_im2col_and_implicit_write_a_channel_slice(implicit, threads):
    """Both write a channel slice; im2col also reads one (its gather copies pixel by pixel)."""
    rng = np.random.default_rng(12)
    n, h, w, c, m = 1, 13, 21, 12, 40
    x = rng.standard_normal((n, h, w, c + (0 if implicit else 9))).astype(np.float32)[..., :c]
    wt = rng.standard_normal((m, c, 3, 3)).astype(np.float32)
    want = np.zeros((n, h, w, m))
    xp = np.pad(x.astype(np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    for i in range(3):
        for j in range(3):
            want += np.einsum("nhwc,mc->nhwm", xp[:, i:i + h, j:j + w], wt[:, :, i, j])
    buf = np.full((n, h, w, m + 24), np.nan, np.float32)
    out = buf[..., 16:16 + m]
    packed = g.pack_b(np.ascontiguousarray(wt.transpose(0, 2, 3, 1).reshape(m, -1)), trans_b=True)
    im2col.conv_im2col(True, x, packed, None, None, out, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1),
                  num_threads=threads, implicit=implicit)
    assert _rel_err(out, want) < 1e-5
    assert np.isnan(buf[..., :16]).all() and np.isnan(buf[..., 16 + m:]).all()


def test_pixels_that_are_not_evenly_spaced_rows_are_refused():
    wp = g.pack_b(np.ones((8, 8), np.float32))
    x = np.ones((1, 4, 6, 8), np.float32)
    with pytest.raises(ValueError, match="channel slice"):
        g.conv1x1_nhwc(x, wp, None, None, np.zeros((1, 8, 6, 8), np.float32)[:, ::2])   # rows apart
    with pytest.raises(ValueError, match="channel slice"):
        g.conv1x1_nhwc(np.ones((1, 4, 6, 16), np.float32)[..., ::2], wp, None, None, np.zeros((1, 4, 6, 8), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):   # implicit GEMM reads whole kernel rows
        im2col.conv_im2col(True, np.ones((1, 4, 6, 16), np.float32)[..., :8], g.pack_b(np.ones((72, 8), np.float32)),
                      None, None, np.zeros((1, 2, 4, 8), np.float32), (3, 3), (1, 1), (1, 1), (0, 0, 0, 0),
                      implicit=True)
