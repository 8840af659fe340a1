"""The Winograd Conv routines (F(2x2,3x3) and F(4x4,3x3), NCHW and NHWC, on BLAS and, where the CPU
has AVX-512, on our own SGEMM) against the NumPy reference within
their stated error bounds: odd sizes, asymmetric pads, every fused activation, residual and bias,
every parallel mode; what they refuse; the kernel's refusal of inconsistent buffers; a whole
ResNet-50 with every eligible 3x3 layer on them."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import workbench
from routine_helpers import assert_routine_matches
from routine_helpers import conv_graph as shared_conv_graph
from workbench.runtime import cpu
from workbench import routines, zoo
from workbench.ir.graph import Layer
from workbench.ir.ops.conv import Conv
from workbench.routines import conv_winograd as cw
from workbench.routines import conv_winograd512 as cw512

SETTINGS = dict(deadline=None, derandomize=True, database=None)
DESCRIPTORS = {f"cpu:float32:{layout}/winograd{m}": m for layout in ("nchw", "nhwc") for m in (2, 4)}
HAVE_512 = cw512._kernels() is not None
if HAVE_512:    # elsewhere they do not apply (checked in test_avx512_needs_the_cpu)
    DESCRIPTORS.update({f"cpu:float32:{layout}/winograd{m}_avx512": m for layout in ("nchw", "nhwc") for m in (2, 4)})
needs_512 = pytest.mark.skipif(not HAVE_512, reason="no AVX-512 CPU or winograd512_avx512 build")
ACTIVATIONS = (None, "Relu", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish", "Sigmoid", "PRelu", "Tanh")


def conv_graph(x_shape, w, bias=None, attrs=None, activation=None, residual=False, slope=None):
    """The shared one-Conv graph, padded by 1 unless ``attrs`` say otherwise (the Winograd case)."""
    return shared_conv_graph(x_shape, w, bias, {"pads": [1, 1, 1, 1], **(attrs or {})}, activation, residual,
                             slope=slope)


@st.composite
def cases(draw):
    pads = [draw(st.integers(0, 2)) for _ in range(4)]
    size = [draw(st.integers(max(1, 3 - pads[i] - pads[i + 2]), 19)) for i in range(2)]
    return dict(batch=draw(st.integers(1, 3)), c=draw(st.integers(1, 24)), m=draw(st.integers(1, 24)), pads=pads,
                size=size, bias=draw(st.booleans()), residual=draw(st.booleans()),
                activation=draw(st.sampled_from(ACTIVATIONS)), seed=draw(st.integers(0, 2 ** 16)))


def build(p):
    rng = np.random.default_rng(p["seed"])
    w = rng.standard_normal((p["m"], p["c"], 3, 3)).astype(np.float32)
    bias = rng.standard_normal(p["m"]).astype(np.float32) if p["bias"] else None
    return conv_graph([p["batch"], p["c"], *p["size"]], w, bias, dict(pads=p["pads"]), p["activation"], p["residual"])


@settings(max_examples=25, **SETTINGS)
@given(cases(), st.sampled_from([1, 2]))
def test_matches_reference(p, threads):
    graph = build(p)
    for descriptor, m in DESCRIPTORS.items():
        assert_routine_matches(graph, descriptor, rtol=cw.RTOL[m], expect_layers=["conv"], num_threads=threads,
                               seed=p["seed"])


def _one(x_shape, w_shape, **attrs):
    return conv_graph(x_shape, np.ones(w_shape, np.float32), attrs=attrs)


@pytest.mark.parametrize("make, accepted", [
    (lambda: _one([1, 4, 9, 9], [5, 4, 3, 3]), True),
    (lambda: _one([1, 4, 9, 9], [5, 4, 3, 3], pads=[0, 2, 1, 0]), True),
    (lambda: _one([1, 4, 9, 9], [5, 4, 3, 3], strides=[2, 2]), False),
    (lambda: _one([1, 4, 9, 9], [5, 4, 3, 3], strides=[1, 2]), False),
    (lambda: _one([1, 4, 9, 9], [5, 4, 3, 3], dilations=[2, 2]), False),
    (lambda: _one([1, 4, 9, 9], [5, 4, 5, 5], pads=[2, 2, 2, 2]), False),
    (lambda: _one([1, 4, 9, 9], [5, 4, 1, 1], pads=[0, 0, 0, 0]), False),
    (lambda: _one([1, 4, 9, 9], [6, 2, 3, 3], group=2), False),
    (lambda: _one([1, 4, 9, 9], [4, 1, 3, 3], group=4), False),
])
def test_applies(make, accepted):
    graph = make()
    conv = graph.layer("conv")
    for d in DESCRIPTORS:
        assert routines.get("Conv", d).applies(conv, graph.input_specs(conv)) == accepted, d


def test_resnet50_3x3_layers():
    graph = workbench.load(zoo.build("resnet50", resolution=64).SerializeToString())
    eligible = [l.name for l in graph if cw.winograd_applies(l, graph.input_specs(l))]
    assert len(eligible) == 13          # 16 bottleneck 3x3 convs, 3 of them stride 2
    for descriptor, m in DESCRIPTORS.items():
        assert_routine_matches(graph, descriptor, rtol=cw.RTOL[m], expect_layers=eligible, seed=7)


# -- the kernel itself ----------------------------------------------------------------------------
@pytest.fixture
def kern():
    return cpu.kernel_module("winograd")


@settings(max_examples=20, **SETTINGS)
@given(cases(), st.sampled_from([2, 4]), st.sampled_from([0, 1]), st.integers(1, 4), st.sampled_from([1, 2]),
       st.booleans())
def test_kernel_plans(p, m, mode, rows, threads, nhwc):
    """Every parallel mode and block size, beyond the plan the routine picks for a layer."""
    k = cpu.kernel_module("winograd")
    rng = np.random.default_rng(p["seed"])
    x = rng.standard_normal((p["batch"], p["c"], *p["size"])).astype(np.float32)
    w = rng.standard_normal((p["m"], p["c"], 3, 3)).astype(np.float32)
    bias, slope = rng.standard_normal(p["m"]).astype(np.float32), rng.standard_normal(p["m"]).astype(np.float32)
    layer = Layer("probe", "Conv", [], [], attrs=dict(kernel_shape=[3, 3], strides=[1, 1], dilations=[1, 1],
                                                      pads=p["pads"], group=1))
    conv = Conv.compute(layer, [x.astype(np.float64), w.astype(np.float64), bias.astype(np.float64)])[0]
    res = rng.standard_normal(conv.shape).astype(np.float32)
    ref = conv + res
    ref = np.where(ref >= 0, ref, ref * slope.reshape(1, -1, 1, 1))
    sizes = k.scratch_floats(m, *x.shape, p["m"], p["pads"], rows, mode, threads, nhwc)
    u = cw.transform_weights(w, m)
    if nhwc:
        x, u, res, ref = (np.ascontiguousarray(x.transpose(0, 2, 3, 1)), np.ascontiguousarray(u.transpose(0, 2, 1)),
                          np.ascontiguousarray(res.transpose(0, 2, 3, 1)), ref.transpose(0, 2, 3, 1))
    out = np.empty(ref.shape, np.float32)
    (k.nhwc if nhwc else k.nchw)(x, u, bias, out, *[np.empty(s, np.float32) for s in sizes], m, p["pads"],
                                 residual=res, act=7, slope=slope, rows=rows, mode=mode, num_threads=threads)
    assert np.abs(out - ref).max() <= cw.RTOL[m] * np.abs(ref).max()


def _kernel_case(k, tile=2, **change):
    """Keyword arguments of a valid 2x3x8x8 -> 2x4x8x8 F(m) convolution, with ``change`` applied."""
    case = dict(x=np.zeros((2, 3, 8, 8), np.float32), U=np.zeros(((tile + 2) ** 2, 4, 3), np.float32),
                bias=np.zeros(4, np.float32), out=np.zeros((2, 4, 8, 8), np.float32), m=tile, pads=(1, 1, 1, 1),
                rows=2, mode=1, num_threads=2)
    sizes = k.scratch_floats(tile, 2, 3, 8, 8, 4, (1, 1, 1, 1), 2, 1, 2)
    case.update({n: np.zeros(s, np.float32) for n, s in zip(("V", "Mo", "tmp"), sizes)})
    case.update(change)
    return case


def test_valid_kernel_case_runs(kern):
    for m in (2, 4):
        out = kern.nchw(**_kernel_case(kern, m))
        assert not out.any()


@pytest.mark.parametrize("change, message", [
    (dict(x=np.zeros((2, 3, 8), np.float32)), "4-D"),
    (dict(x=np.zeros((2, 3, 8, 8), np.float64)), "float32"),
    (dict(x=np.zeros((2, 3, 8, 16), np.float32)[..., ::2]), "contiguous"),
    (dict(U=np.zeros((36, 4, 3), np.float32)), "U"),
    (dict(U=np.zeros((16, 4, 5), np.float32)), "U"),
    (dict(U=np.zeros((16, 4, 3), np.float64)), "float32"),
    (dict(bias=np.zeros(3, np.float32)), "bias"),
    (dict(out=np.zeros((2, 4, 8, 7), np.float32)), "output"),
    (dict(out=np.zeros((2, 4, 8, 8), np.float32)[::-1]), "contiguous"),
    (dict(V=np.zeros(3, np.float32)), "scratch V"),
    (dict(Mo=np.zeros(3, np.float32)), "scratch Mo"),
    (dict(tmp=np.zeros(3, np.float32)), "scratch tmp"),
    (dict(num_threads=4), "scratch"),
    (dict(rows=4), "scratch"),
    (dict(m=3), "bad m"),
    (dict(mode=5), "bad m"),
    (dict(act=7), "slope"),
    (dict(act=1, slope=np.zeros(3, np.float32)), "slope"),
    (dict(residual=np.zeros((2, 4, 8, 8, 1), np.float32)), "residual"),
    (dict(pads=(0, 0, 0, -5)), "bad pads"),
    (dict(x=np.zeros((2, 3, 1, 1), np.float32), pads=(0, 0, 0, 0)), "empty output"),
    (dict(out=None), "NumPy array"),
])
def test_kernel_refuses_bad_buffers(kern, change, message):
    with pytest.raises((ValueError, TypeError), match=message):
        kern.nchw(**_kernel_case(kern, **change))


def _nhwc_case(k, **change):
    """A valid 2x8x8x3 -> 2x8x8x4 F(2) NHWC case (U is ((m+2)^2, C, M) here), ``change`` applied."""
    case = _kernel_case(k, U=np.zeros((16, 3, 4), np.float32), x=np.zeros((2, 8, 8, 3), np.float32),
                        out=np.zeros((2, 8, 8, 4), np.float32))
    sizes = k.scratch_floats(2, 2, 3, 8, 8, 4, (1, 1, 1, 1), 2, 1, 2, True)
    case.update({n: np.zeros(s, np.float32) for n, s in zip(("V", "Mo", "tmp"), sizes)})
    case.update(change)
    return case


@pytest.mark.parametrize("change, message", [
    (dict(), None),
    (dict(U=np.zeros((16, 4, 3), np.float32)), "U"),                 # the NCHW (M, C) order
    (dict(x=np.zeros((2, 3, 8, 8), np.float32)), "U"),              # NCHW input: C = 8
    (dict(out=np.zeros((2, 4, 8, 8), np.float32)), "output"),
    (dict(residual=np.zeros((2, 4, 8, 8), np.float32)), "residual"),
    (dict(tmp=np.zeros(20, np.float32)), "scratch tmp"),
])
def test_nhwc_kernel_refuses_bad_buffers(kern, change, message):
    if message is None:
        assert not kern.nhwc(**_nhwc_case(kern)).any()
        return
    with pytest.raises((ValueError, TypeError), match=message):
        kern.nhwc(**_nhwc_case(kern, **change))


# -- the AVX-512 SGEMM driver (winograd512.pyx) ---------------------------------------------------
def test_avx512_needs_the_cpu():
    graph = _one([1, 4, 9, 9], [5, 4, 3, 3])
    conv = graph.layer("conv")
    for layout in ("nchw", "nhwc"):
        r = routines.get("Conv", f"cpu:float32:{layout}/winograd4_avx512")
        assert r.applies(conv, graph.input_specs(conv)) == HAVE_512


def _run512(m, nhwc, x, w, bias, pads, rows, mode, threads, residual=None, slope=None, act=0):
    k = cw512._kernels()
    u = cw.transform_weights(w, m)
    if nhwc:
        x, u = np.ascontiguousarray(x.transpose(0, 2, 3, 1)), np.ascontiguousarray(u.transpose(0, 2, 1))
        residual = None if residual is None else np.ascontiguousarray(residual.transpose(0, 2, 3, 1))
    n, c, h, wd = x.shape if not nhwc else (x.shape[0], x.shape[3], x.shape[1], x.shape[2])
    oh, ow = h + pads[0] + pads[2] - 2, wd + pads[1] + pads[3] - 2
    out = np.empty((n, oh, ow, w.shape[0]) if nhwc else (n, w.shape[0], oh, ow), np.float32)
    sizes = k.scratch_floats(m, n, c, h, wd, w.shape[0], pads, rows, mode, threads, nhwc)
    (k.nhwc if nhwc else k.nchw)(x, k.pack_u(u, nhwc), bias, out, *[np.empty(s, np.float32) for s in sizes], m,
                                 pads, residual=residual, act=act, slope=slope, rows=rows, mode=mode,
                                 num_threads=threads)
    return out.transpose(0, 3, 1, 2) if nhwc else out


def _reference(x, w, bias, pads, residual=None, slope=None):
    layer = Layer("probe", "Conv", [], [], attrs=dict(kernel_shape=[3, 3], strides=[1, 1], dilations=[1, 1],
                                                      pads=list(pads), group=1))
    ref = Conv.compute(layer, [x.astype(np.float64), w.astype(np.float64), bias.astype(np.float64)])[0]
    if residual is not None:
        ref = ref + residual
    if slope is not None:
        ref = np.where(ref >= 0, ref, ref * slope.reshape(1, -1, 1, 1))
    return ref


@needs_512
@settings(max_examples=20, **SETTINGS)
@given(cases(), st.sampled_from([2, 4]), st.sampled_from([0, 1]), st.integers(1, 4), st.sampled_from([1, 2, 3]),
       st.booleans())
def test_kernel512_plans(p, m, mode, rows, threads, nhwc):
    """Every parallel mode and block size of the AVX-512 driver, PRelu and residual fused."""
    rng = np.random.default_rng(p["seed"])
    x = rng.standard_normal((p["batch"], p["c"], *p["size"])).astype(np.float32)
    w = rng.standard_normal((p["m"], p["c"], 3, 3)).astype(np.float32)
    bias, slope = rng.standard_normal(p["m"]).astype(np.float32), rng.standard_normal(p["m"]).astype(np.float32)
    ref = _reference(x, w, bias, p["pads"])
    res = rng.standard_normal(ref.shape).astype(np.float32)
    ref = _reference(x, w, bias, p["pads"], res, slope)
    out = _run512(m, nhwc, x, w, bias, p["pads"], rows, mode, threads, res, slope, act=7)
    assert np.abs(out - ref).max() <= cw.RTOL[m] * np.abs(ref).max()


@needs_512
@pytest.mark.parametrize("nhwc", [False, True])
@pytest.mark.parametrize("m, mode, rows", [(4, 0, 2), (2, 1, 1), (4, 1, 3)])
def test_kernel512_blocked_sizes(nhwc, m, mode, rows):
    """Depth beyond one K block (C > 256), output channels beyond one A block (M > 144), more than
    one row/column job per point (> 144 tiles NHWC, > 256 NCHW), ragged edges everywhere."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 263, 23, 70)).astype(np.float32)
    w = (rng.standard_normal((150, 263, 3, 3)) / 16).astype(np.float32)
    bias = rng.standard_normal(150).astype(np.float32)
    ref = _reference(x, w, bias, (1, 1, 1, 1))
    out = _run512(m, nhwc, x, w, bias, (1, 1, 1, 1), rows, mode, 2)
    assert np.abs(out - ref).max() <= cw.RTOL[m] * np.abs(ref).max()


def _case512(k, nhwc=False, **change):
    """A valid 2x3x8x8 -> 2x4x8x8 F(2) case for the AVX-512 driver, with ``change`` applied."""
    u = np.zeros((16, 3, 4) if nhwc else (16, 4, 3), np.float32)
    case = dict(x=np.zeros((2, 8, 8, 3) if nhwc else (2, 3, 8, 8), np.float32), PU=k.pack_u(u, nhwc),
                bias=np.zeros(4, np.float32), out=np.zeros((2, 8, 8, 4) if nhwc else (2, 4, 8, 8), np.float32),
                m=2, pads=(1, 1, 1, 1), rows=2, mode=1, num_threads=2)
    sizes = k.scratch_floats(2, 2, 3, 8, 8, 4, (1, 1, 1, 1), 2, 1, 2, nhwc)
    case.update({n: np.zeros(s, np.float32) for n, s in zip(("V", "Mo", "tmp", "work"), sizes)})
    case.update(change)
    return case


@needs_512
@pytest.mark.parametrize("nhwc", [False, True])
@pytest.mark.parametrize("change, message", [
    (dict(), None),
    (dict(x=np.zeros((2, 3, 8), np.float32)), "4-D"),
    (dict(x=np.zeros((2, 5, 8, 8), np.float32)), "packed U"),      # C changes under either layout
    (dict(x=np.zeros((2, 0, 8, 8), np.float32)), "C >= 1|packed U"),
    (dict(x=np.zeros((2, 3, 8, 8), np.float64)), "float32"),
    (dict(PU=np.zeros(7, np.float32)), "packed U"),
    (dict(PU=np.zeros((16, 4, 3), np.float32)), "packed U"),        # not packed
    (dict(m=4), "packed U"),                                         # F(2) weights for F(4)
    (dict(bias=np.zeros(5, np.float32)), "packed U|output"),       # M from the bias
    (dict(bias=np.zeros((4, 1), np.float32)), "bias"),
    (dict(out=np.zeros((2, 4, 8, 7), np.float32)), "output"),
    (dict(out=np.zeros((2, 4, 8, 8), np.float32)[::-1]), "output|contiguous"),
    (dict(V=np.zeros(3, np.float32)), "scratch V"),
    (dict(Mo=np.zeros(3, np.float32)), "scratch Mo"),
    (dict(tmp=np.zeros(3, np.float32)), "scratch tmp"),
    (dict(work=np.zeros(3, np.float32)), "scratch work"),
    (dict(work=None), "NumPy array"),
    (dict(num_threads=4), "scratch"),
    (dict(m=3), "bad m"),
    (dict(mode=5), "bad m"),
    (dict(act=7), "slope"),
    (dict(act=1, slope=np.zeros(3, np.float32)), "slope"),
    (dict(residual=np.zeros((2, 4, 8, 8, 1), np.float32)), "residual"),
    (dict(pads=(0, 0, 0, -5)), "bad pads"),
    (dict(x=np.zeros((2, 1, 1, 3), np.float32), pads=(0, 0, 0, 0)), "empty output|packed U"),
])
def test_kernel512_refuses_bad_buffers(nhwc, change, message):
    k = cw512._kernels()
    if message is None:
        assert not (k.nhwc if nhwc else k.nchw)(**_case512(k, nhwc)).any()
        return
    if nhwc and "x" in change and change["x"].ndim == 4 and change["x"].dtype == np.float32:
        change["x"] = np.ascontiguousarray(np.moveaxis(change["x"], 1, 3))
    with pytest.raises((ValueError, TypeError), match=message):
        (k.nhwc if nhwc else k.nchw)(**_case512(k, nhwc, **change))


@needs_512
def test_pack_u_refuses_bad_weights():
    k = cw512._kernels()
    for u, message in ((np.zeros((9, 4, 3), np.float32), "m 2 or 4"), (np.zeros((16, 4), np.float32), "m 2 or 4"),
                       (np.zeros((16, 4, 3), np.float64), "float32")):
        with pytest.raises((ValueError, TypeError), match=message):
            k.pack_u(u, False)
