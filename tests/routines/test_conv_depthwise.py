"""The depthwise Conv routines (NHWC and NCHW, every ISA variant this CPU runs) against the NumPy
reference: square and rectangular kernels from 1x1 to 9x9, stride 1/2, asymmetric pads, every fused activation, residual and bias; what
they refuse; the kernels' refusal of inconsistent buffers; a whole MobileNetV2 on them."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import workbench
from routine_helpers import assert_routine_matches, conv_graph
from workbench.runtime import cpu
from workbench import routines, zoo
from workbench.routines import conv_depthwise

SETTINGS = dict(deadline=None, derandomize=True, database=None)
ALL = sorted(d for d in routines.routines_for("Conv") if "/depthwise" in d and ":float32:" in d)   # bfloat16: test_gemm_bf16.py
RUNNABLE = [d for d in ALL if routines.get("Conv", d).isa is None or cpu.supports(routines.get("Conv", d).isa)]
ACTIVATIONS = (None, "Relu", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish", "Sigmoid", "PRelu", "Tanh")


def dw_graph(x_shape, w, bias=None, strides=(1, 1), pads=(0, 0, 0, 0), group=None, activation=None,
             residual=False, slope=None, dilations=(1, 1)):
    """The shared one-Conv graph with depthwise defaults (group = input channels)."""
    attrs = dict(strides=list(strides), pads=list(pads), dilations=list(dilations), group=group or x_shape[1])
    return conv_graph(x_shape, w, bias, attrs, activation, residual, slope=slope)


@st.composite
def dw_cases(draw):
    kh = draw(st.sampled_from([3, 5, 1, 2, 4, 6, 7, 9]))
    kw = draw(st.sampled_from([kh, kh, 1, 2, 3, 5, 7, 8]))
    k = (kh, kw)
    strides = [draw(st.integers(1, 2)), draw(st.integers(1, 2))]
    pads = [draw(st.integers(0, k[i % 2] - 1)) for i in range(4)]
    size = [draw(st.integers(max(1, k[i] - pads[i] - pads[i + 2]), k[i] + 12)) for i in range(2)]
    return dict(batch=draw(st.integers(1, 3)), c=draw(st.integers(1, 40)), k=k, strides=strides, pads=pads,
                size=size, bias=draw(st.booleans()), residual=draw(st.booleans()),
                activation=draw(st.sampled_from(ACTIVATIONS)), seed=draw(st.integers(0, 2 ** 16)))


def build(p):
    rng = np.random.default_rng(p["seed"])
    w = rng.standard_normal((p["c"], 1, *p["k"])).astype(np.float32)
    bias = rng.standard_normal(p["c"]).astype(np.float32) if p["bias"] else None
    return dw_graph([p["batch"], p["c"], *p["size"]], w, bias, p["strides"], p["pads"],
                    activation=p["activation"], residual=p["residual"])


@settings(max_examples=40, **SETTINGS)
@given(dw_cases(), st.sampled_from([1, 2]))
def test_matches_reference(p, threads):
    graph = build(p)
    for descriptor in RUNNABLE:
        assert_routine_matches(graph, descriptor, expect_layers=["conv"], num_threads=threads, seed=p["seed"])


def _one(x_shape, w_shape, **kw):
    return dw_graph(x_shape, np.ones(w_shape, np.float32), **kw)


@pytest.mark.parametrize("make, accepted", [
    (lambda: _one([1, 4, 9, 9], [4, 1, 3, 3]), True),
    (lambda: _one([1, 4, 9, 9], [4, 1, 5, 5], strides=(2, 1), pads=(2, 0, 1, 2)), True),
    (lambda: _one([1, 4, 9, 9], [8, 1, 3, 3]), False),                       # channel multiplier 2
    (lambda: _one([1, 4, 9, 9], [4, 1, 7, 7]), True),
    (lambda: _one([1, 4, 9, 9], [4, 1, 3, 5]), True),                        # not square
    (lambda: _one([1, 4, 9, 9], [4, 1, 1, 1]), True),
    (lambda: _one([1, 4, 40, 40], [4, 1, 32, 32]), False),                   # past MAX_KERNEL
    (lambda: _one([1, 4, 9, 9], [4, 1, 3, 3], strides=(3, 3)), False),
    (lambda: _one([1, 4, 9, 9], [4, 1, 3, 3], dilations=(2, 2)), False),
    (lambda: _one([1, 4, 9, 9], [4, 2, 3, 3], group=2), False),              # grouped, not depthwise
    (lambda: _one([1, 4, 9, 9], [4, 4, 3, 3], group=1), False),
    # A PRelu slope varying along the width has no per-channel epilogue code.
    (lambda: _one([1, 4, 9, 9], [4, 1, 3, 3], pads=(1, 1, 1, 1), activation="PRelu",
                  slope=np.linspace(0, 1, 9, dtype=np.float32)), False),
    (lambda: _one([1, 4, 9, 9], [4, 1, 3, 3], activation="PRelu", slope=np.float32([0.25])), True),
])
def test_applies(make, accepted):
    graph = make()
    conv = graph.layer("conv")
    for d in RUNNABLE:
        assert routines.get("Conv", d).applies(conv, graph.input_specs(conv)) == accepted, d


def test_isa_variants_check_the_cpu(monkeypatch):
    graph = _one([1, 4, 9, 9], [4, 1, 3, 3])
    conv = graph.layer("conv")
    monkeypatch.setattr(cpu, "supports", lambda isa: False)
    for d in ALL:
        r = routines.get("Conv", d)
        assert r.applies(conv, graph.input_specs(conv)) == (r.isa is None), d


def test_mobilenet_v2_depthwise_layers():
    graph = workbench.load(zoo.build("mobilenet_v2", resolution=64).SerializeToString())
    dw = [l.name for l in graph if conv_depthwise.depthwise_applies(l, graph.input_specs(l))]
    assert len(dw) == 17
    for layout in ("nhwc", "nchw"):
        best = max((d for d in RUNNABLE if f":{layout}/" in d), key=lambda d: routines.get("Conv", d).priority)
        assert_routine_matches(graph, best, expect_layers=dw, seed=5)


# -- the kernels themselves ---------------------------------------------------------------------
@pytest.fixture(params=[None, "avx2", "avx512"])
def kern(request):
    mod = cpu.kernel_module("depthwise", request.param)
    if mod is None:
        pytest.skip(f"depthwise kernels for {request.param} not runnable here")
    return mod


def _nhwc_case(**change):
    case = dict(x=np.zeros((2, 8, 9, 5), np.float32), w=np.zeros((9, 5), np.float32), bias=np.zeros(5, np.float32),
                out=np.zeros((2, 8, 9, 5), np.float32), kernel=3, strides=(1, 1), pads=(1, 1, 1, 1))
    case.update(change)
    return case


def _nchw_case(kern, **change):
    case = dict(x=np.zeros((2, 5, 8, 9), np.float32), w=np.zeros((5, 9), np.float32), bias=np.zeros(5, np.float32),
                out=np.zeros((2, 5, 8, 9), np.float32), kernel=3, strides=(1, 1), pads=(1, 1, 1, 1), num_threads=2)
    case["scratch"] = np.zeros(2 * kern.nchw_scratch_floats(3, (1, 1), (1, 1, 1, 1), 8, 9), np.float32)
    case.update(change)
    return case


def _dw_nhwc_numpy(x, w, bias, k, strides, pads):
    """Float64 NHWC depthwise convolution by its definition (w is (KH*KW, C))."""
    (kh, kw), (sh, sw), (pt, pl, pb, pr) = k, strides, pads
    xp = np.pad(x.astype(np.float64), ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    oh, ow = (xp.shape[1] - kh) // sh + 1, (xp.shape[2] - kw) // sw + 1
    out = np.zeros((x.shape[0], oh, ow, x.shape[3])) + bias
    for i in range(kh):
        for j in range(kw):
            out += xp[:, i: i + (oh - 1) * sh + 1: sh, j: j + (ow - 1) * sw + 1: sw] * w[i * kw + j]
    return out


@pytest.mark.parametrize("c", [16, 17, 48, 72, 144])
@pytest.mark.parametrize("k, strides, pads", [((3, 3), (1, 1), (1, 1, 1, 1)), ((3, 3), (2, 2), (0, 0, 1, 1)),
                                              ((5, 5), (2, 1), (2, 2, 2, 2)), ((1, 7), (1, 2), (0, 3, 0, 2)),
                                              ((7, 7), (1, 1), (3, 3, 3, 3)), ((5, 3), (1, 1), (2, 0, 2, 2)),
                                              ((3, 7), (2, 1), (1, 3, 1, 1))])
@pytest.mark.parametrize("threads", [1, 2])
def test_nhwc_kernel_wide_rows_match_numpy(kern, c, k, strides, pads, threads):
    """Rows wide enough for the eight-pixel register blocks of the AVX-512 build, several
    16-channel blocks and a masked last block, windows crossing every border."""
    rng = np.random.default_rng(c)
    x = rng.standard_normal((1, 11, 37, c)).astype(np.float32)
    w = rng.standard_normal((k[0] * k[1], c)).astype(np.float32)
    bias = rng.standard_normal(c).astype(np.float32)
    want = _dw_nhwc_numpy(x, w, bias, k, strides, pads)
    out = np.full(want.shape, np.nan, np.float32)
    kern.nhwc(x, w, bias, out, k, strides, pads, num_threads=threads)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("width, k, pads", [(5, (3, 7), (1, 3, 1, 3)), (3, (7, 7), (3, 3, 3, 3)), (9, (5, 5), (2, 4, 2, 0)),
                                          (1, (3, 3), (1, 1, 1, 1))])
def test_nhwc_kernel_narrow_rows_match_numpy(kern, width, k, pads):
    """Stride-1 rows narrower than a register block of eight pixels, and windows wider than the
    row: the AVX-512 build's blocks then skip the taps outside on both sides at once."""
    rng = np.random.default_rng(width)
    x = rng.standard_normal((2, 6, width, 40)).astype(np.float32)
    w = rng.standard_normal((k[0] * k[1], 40)).astype(np.float32)
    bias = rng.standard_normal(40).astype(np.float32)
    want = _dw_nhwc_numpy(x, w, bias, k, (1, 1), pads)
    out = np.full(want.shape, np.nan, np.float32)
    kern.nhwc(x, w, bias, out, k, (1, 1), pads, num_threads=2)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("act, p0, p1, fn", [
    (0, 0, 0, lambda v: v),
    (1, 0, 0, lambda v: np.maximum(v, 0)),
    (2, -0.5, 0.7, lambda v: np.clip(v, -0.5, 0.7)),
    (3, 0.1, 0, lambda v: np.where(v < 0, 0.1 * v, v)),
    (4, 0.2, 0.5, lambda v: np.clip(0.2 * v + 0.5, 0, 1)),
    (5, 0, 0, lambda v: v * np.clip(v / 6 + 0.5, 0, 1)),
])
@pytest.mark.parametrize("residual", [False, True])
def test_nhwc_kernel_epilogue_matches_numpy(kern, act, p0, p1, fn, residual):
    """Each activation (in registers on the AVX-512 build), with and without a residual added
    before it."""
    rng = np.random.default_rng(act)
    x = rng.standard_normal((2, 9, 21, 40)).astype(np.float32)
    w = rng.standard_normal((9, 40)).astype(np.float32)
    bias = rng.standard_normal(40).astype(np.float32)
    res = rng.standard_normal((2, 9, 21, 40)).astype(np.float32) if residual else None
    want = fn(_dw_nhwc_numpy(x, w, bias, (3, 3), (1, 1), (1, 1, 1, 1)) + (res if residual else 0))
    out = np.full(want.shape, np.nan, np.float32)
    kern.nhwc(x, w, bias, out, 3, (1, 1), (1, 1, 1, 1), residual=res, act=act, p0=p0, p1=p1, num_threads=2)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_valid_kernel_cases_run(kern):
    kern.nhwc(**_nhwc_case())
    kern.nchw(**_nchw_case(kern))


@pytest.mark.parametrize("change, message", [
    (dict(x=np.zeros((2, 8, 9), np.float32)), "4-D"),
    (dict(x=np.zeros((2, 8, 9, 5), np.float64)), "float32"),
    (dict(x=np.zeros((2, 8, 18, 5), np.float32)[:, :, ::2]), "contiguous"),
    (dict(w=np.zeros((9, 4), np.float32)), "weights"),
    (dict(w=np.zeros((25, 5), np.float32)), "weights"),
    (dict(bias=np.zeros(4, np.float32)), "bias"),
    (dict(out=np.zeros((2, 8, 9, 4), np.float32)), "output"),
    (dict(out=np.zeros((2, 4, 5, 5), np.float32), strides=(1, 1)), "output"),
    (dict(residual=np.zeros((2, 8, 9, 4), np.float32)), "residual"),
    (dict(act=7), "slope"),
    (dict(act=7, slope=np.zeros(3, np.float32)), "slope"),
    (dict(act=42), "activation"),
    (dict(pads=(1, 1, 1, -1)), "geometry"),
    (dict(strides=(1, 3)), "strides"),
    (dict(kernel=7), "weights"),
    (dict(kernel=(3, 5)), "weights"),
    (dict(kernel=0), "geometry"),
    (dict(kernel=32), "geometry"),
    (dict(x=np.zeros((2, 1, 9, 5), np.float32), pads=(0, 0, 0, 0)), "empty output"),
    (dict(out=[[0.0]]), "NumPy array"),
    (dict(num_threads=0), "num_threads"),
])
def test_nhwc_kernel_refuses_bad_buffers(kern, change, message):
    with pytest.raises((ValueError, TypeError), match=message):
        kern.nhwc(**_nhwc_case(**change))


@pytest.mark.parametrize("change, message", [
    (dict(w=np.zeros((9, 5), np.float32)), "weights"),
    (dict(out=np.zeros((2, 8, 9, 5), np.float32)), "output"),
    (dict(scratch=np.zeros(10, np.float32)), "scratch"),
    (dict(scratch=np.zeros(10 ** 4, np.float64)), "float32"),
    (dict(num_threads=3), "scratch"),
    (dict(x=np.zeros((5, 8, 9), np.float32)), "4-D"),
])
def test_nchw_kernel_refuses_bad_buffers(kern, change, message):
    with pytest.raises((ValueError, TypeError), match=message):
        kern.nchw(**_nchw_case(kern, **change))


@pytest.mark.parametrize("w_shape, kw", [
    ([8, 1, 3, 3], dict(dilations=(2, 2), pads=(2, 2, 2, 2))),     # dilated
    ([8, 1, 3, 3], dict(strides=(3, 3), pads=(1, 1, 1, 1))),        # stride 3
    ([8, 1, 5, 5], dict(group=4, pads=(2, 2, 2, 2))),               # channel multiplier 2
])
def test_depthwise_the_direct_kernels_refuse_runs_as_gemm(w_shape, kw):
    """Depthwise layers outside the direct kernels still get a compiled routine (a GEMM per
    channel), not only the NumPy reference."""
    graph = dw_graph([1, 4, 11, 11], np.random.default_rng(1).standard_normal(w_shape).astype(np.float32), **kw)
    conv = graph.layer("conv")
    assert not conv_depthwise.depthwise_applies(conv, graph.input_specs(conv))
    found = [r.descriptor for r in routines.applicable(graph, conv) if r.algo != "reference"]
    assert any("im2col" in d or "gemm" in d for d in found), found
    for d in found:
        assert_routine_matches(graph, d, expect_layers=["conv"], num_threads=2, seed=3)
