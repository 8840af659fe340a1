"""The GEMM conv routines (im2col, gemm1x1; NCHW and NHWC) against the NumPy reference: every
pad/stride/dilation/group form they accept, fused bias/residual/activation, what they refuse,
the kernel's refusal of inconsistent buffers, and a whole ResNet-50 on them."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import workbench
from routine_helpers import REFERENCE, assert_routine_matches, conv_graph
from workbench import routines, zoo
from workbench.runtime.compiled import CompiledModel
from workbench.ir.ops.conv import Conv

k = pytest.importorskip("workbench._kernels.conv_gemm")

IM2COL = ("cpu:float32:nchw/im2col", "cpu:float32:nhwc/im2col")
GEMM1X1 = ("cpu:float32:nchw/gemm1x1", "cpu:float32:nhwc/gemm1x1")
ACTIVATIONS = (None, "Relu", "Clip", "LeakyRelu", "HardSigmoid", "HardSwish", "Sigmoid", "PRelu", "Tanh")
SETTINGS = dict(deadline=None, derandomize=True, database=None)


def _probe_layer(attrs, w):
    a = dict(strides=[1, 1], dilations=[1, 1], pads=[0, 0, 0, 0], group=1, kernel_shape=list(w.shape[2:]))
    a.update(attrs or {})
    return workbench.Layer("probe", "Conv", [], [], attrs=a)


@st.composite
def conv_cases(draw, one_by_one=False):
    group = draw(st.sampled_from([1, 1, 2, 3]))
    cg = draw(st.integers(2 if group > 1 else 1, 5))
    mg = draw(st.integers(1, 6))
    kernel = [1, 1] if one_by_one else [draw(st.integers(1, 4)), draw(st.integers(1, 4))]
    strides = [draw(st.integers(1, 3)), draw(st.integers(1, 3))]
    dilations = [draw(st.integers(1, 2)), draw(st.integers(1, 2))]
    pads = [0] * 4 if one_by_one else [draw(st.integers(0, 2)) for _ in range(4)]
    size = []
    for i in range(2):
        least = max(1, (kernel[i] - 1) * dilations[i] + 1 - pads[i] - pads[i + 2])
        size.append(draw(st.integers(least, least + 10)))
    activation = draw(st.sampled_from(ACTIVATIONS))
    return dict(batch=draw(st.integers(1, 3)), group=group, cg=cg, mg=mg, kernel=kernel, strides=strides,
                dilations=dilations, pads=pads, size=size, bias=draw(st.booleans()), residual=draw(st.booleans()),
                activation=activation, seed=draw(st.integers(0, 2 ** 16)))


def build(p):
    rng = np.random.default_rng(p["seed"])
    c, m = p["cg"] * p["group"], p["mg"] * p["group"]
    w = rng.standard_normal((m, p["cg"], *p["kernel"])).astype(np.float32)
    bias = rng.standard_normal(m).astype(np.float32) if p["bias"] else None
    attrs = dict(kernel_shape=p["kernel"], strides=p["strides"], dilations=p["dilations"], pads=p["pads"],
                 group=p["group"])
    act_attrs = {"LeakyRelu": dict(alpha=0.15), "HardSigmoid": dict(alpha=0.3, beta=0.4)}.get(p["activation"])
    return conv_graph([p["batch"], c, *p["size"]], w, bias, attrs, p["activation"], p["residual"], act_attrs)


@settings(max_examples=25, **SETTINGS)
@given(conv_cases(), st.sampled_from(IM2COL), st.sampled_from([1, 2, 3]))
def test_im2col_matches_reference(p, descriptor, threads):
    assert_routine_matches(build(p), descriptor, expect_layers=["conv"], num_threads=threads, seed=p["seed"])


@settings(max_examples=25, **SETTINGS)
@given(conv_cases(one_by_one=True), st.sampled_from(GEMM1X1), st.sampled_from([1, 2, 3]))
def test_gemm1x1_matches_reference(p, descriptor, threads):
    assert_routine_matches(build(p), descriptor, expect_layers=["conv"], num_threads=threads, seed=p["seed"])


def _one_conv(x_shape, w_shape, **kw):
    return conv_graph(x_shape, np.ones(w_shape, np.float32), **kw)


@pytest.mark.parametrize("make, accepted", [
    # 1-D convolution: imported as a 2-D one of height 1 (ir/passes/conv1d_as_2d.py).
    (lambda: _one_conv([1, 4, 9], [5, 4, 3]), IM2COL),
    (lambda: _one_conv([1, 4, 9, 9], [5, 4, 3, 3]), IM2COL),
    (lambda: _one_conv([1, 4, 9, 9], [5, 4, 1, 1]), IM2COL + GEMM1X1),
    # A padded 1x1 kernel needs im2col.
    (lambda: _one_conv([1, 4, 9, 9], [5, 4, 1, 1], attrs=dict(pads=[1, 0, 0, 0])), IM2COL),
    # Depthwise (one input channel per group) is another family's.
    (lambda: _one_conv([1, 4, 9, 9], [4, 1, 3, 3], attrs=dict(group=4)), ()),
    (lambda: _one_conv([1, 4, 9, 9], [8, 2, 3, 3], attrs=dict(group=2)), IM2COL),
    # PRelu whose slope varies along the width is not per-channel: no epilogue code for it.
    (lambda: _one_conv([1, 4, 9, 9], [5, 4, 1, 1], activation="PRelu",
                       slope=np.linspace(0, 1, 9, dtype=np.float32)), ()),
    (lambda: _one_conv([1, 4, 9, 9], [5, 4, 1, 1], activation="PRelu",
                       slope=np.float32([0.25])), IM2COL + GEMM1X1),
])
def test_applies(make, accepted):
    graph = make()
    conv = graph.layer("conv")
    specs = graph.input_specs(conv)
    for d in IM2COL + GEMM1X1:
        assert routines.get("Conv", d).applies(conv, specs) == (d in accepted), d


def test_every_conv_routine_answers_on_a_1d_convolution():
    """An audio model's 1-D convolution (silero-vad's STFT): every routine says whether it applies
    without failing on the 1-D attributes (the 2-D ones read four pads)."""
    from onnx import helper
    from onnx_helpers import make_model
    model = make_model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], [("x", [1, 4, 9])], [("y", None)],
                       [("w", np.ones((5, 4, 3), np.float32))])
    graph = workbench.load(model.SerializeToString(), fuse=False)   # left 1-D
    conv = graph.layer("conv")
    offered = [d for d, r in routines.routines_for("Conv").items() if r.applies(conv, graph.input_specs(conv))]
    assert "cpu:float32:nchw/reference" in offered


def test_resnet50_on_each_family():
    graph = workbench.load(zoo.build("resnet50", resolution=64).SerializeToString())
    feeds = workbench.random_inputs(graph, seed=3)
    ref = workbench.ReferenceExecutor(graph).run(feeds)
    for layout in ("nchw", "nhwc"):
        assignment, convs = {}, 0
        for layer in graph:
            assignment[layer.name] = REFERENCE
            if layer.op == "Conv":
                specs = graph.input_specs(layer)
                one = routines.get("Conv", f"cpu:float32:{layout}/gemm1x1")
                assignment[layer.name] = (one if one.applies(layer, specs) else
                                          routines.get("Conv", f"cpu:float32:{layout}/im2col")).descriptor
                assert routines.get("Conv", assignment[layer.name]).applies(layer, specs)
                convs += 1
        assert convs == 53
        ours = CompiledModel(graph, assignment, num_threads=2).run(feeds)
        for name, r in ref.items():
            err = float(np.abs(ours[name] - r).max()) / float(np.abs(r).max())
            assert err <= 1e-4, (layout, name, err)


# -- the kernels themselves -------------------------------------------------------------------
def _prelu(y, slope):
    return np.where(y >= 0, y, y * slope.reshape(1, -1, 1, 1))


@settings(max_examples=25, **SETTINGS)
@given(conv_cases(), st.sampled_from([0, 1, 5, 17]), st.booleans(), st.sampled_from([1, 2]), st.booleans())
def test_kernel_schedules(p, tile, parallel_tiles, threads, nhwc):
    """Every tile size and schedule, beyond the one the routines pick for small layers."""
    rng = np.random.default_rng(p["seed"])
    c, m = p["cg"] * p["group"], p["mg"] * p["group"]
    x = rng.standard_normal((p["batch"], c, *p["size"])).astype(np.float32)
    w = rng.standard_normal((m, p["cg"], *p["kernel"])).astype(np.float32)
    bias, slope = rng.standard_normal(m).astype(np.float32), rng.standard_normal(m).astype(np.float32)
    pads = tuple(p["pads"])
    conv = Conv.compute(_probe_layer(dict(kernel_shape=p["kernel"], strides=p["strides"], dilations=p["dilations"],
                                          pads=p["pads"], group=p["group"]), w), [x, w, bias])[0]
    res = rng.standard_normal(conv.shape).astype(np.float32)
    ref = _prelu(conv + res, slope)
    kg = p["cg"] * p["kernel"][0] * p["kernel"][1]
    scratch = np.empty(kg * ref.size * threads, np.float32)
    direct = p["kernel"] == [1, 1] and p["strides"] == [1, 1] and not any(pads)
    args = (p["kernel"], p["strides"], p["dilations"], pads, p["group"], 7, 0.0, 0.0, slope, tile, parallel_tiles,
            direct, threads)
    if nhwc:
        if threads > 1 and not parallel_tiles:  # the GEMM split over channels wants (M, K)
            wp = np.ascontiguousarray(w.transpose(0, 2, 3, 1).reshape(m, kg))
        else:
            wp = np.ascontiguousarray(w.reshape(p["group"], p["mg"], p["cg"], *p["kernel"]).transpose(0, 3, 4, 2, 1)
                                      .reshape(p["group"], kg, p["mg"]))
        out = np.empty(ref.transpose(0, 2, 3, 1).shape, np.float32)
        k.conv2d_nhwc(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), wp, bias,
                      np.ascontiguousarray(res.transpose(0, 2, 3, 1)), out, scratch, *args)
        out = out.transpose(0, 3, 1, 2)
    else:
        out = np.empty(ref.shape, np.float32)
        k.conv2d_nchw(x, w.reshape(m, -1), bias, res, out, scratch, *args)
    assert np.abs(out - ref).max() <= 1e-4 * max(np.abs(ref).max(), 1e-6)


def _kernel_case(**change):
    """Keyword arguments of a valid 2x3x8x8 -> 2x4x8x8 3x3 NCHW conv, with ``change`` applied."""
    case = dict(x=np.zeros((2, 3, 8, 8), np.float32), w=np.zeros((4, 27), np.float32), bias=None, residual=None,
                out=np.zeros((2, 4, 8, 8), np.float32), scratch=np.zeros(27 * 64, np.float32), kernel=(3, 3),
                strides=(1, 1), dilations=(1, 1), pads=(1, 1, 1, 1))
    case.update(change)
    return case


def test_valid_kernel_case_runs():
    k.conv2d_nchw(**_kernel_case())
    k.conv2d_nchw(**_kernel_case(x=np.zeros((2, 3, 8, 8), np.float32), w=np.zeros((4, 3), np.float32),
                                 kernel=(1, 1), pads=(0, 0, 0, 0), scratch=None, direct=True))


@pytest.mark.parametrize("change, message", [
    (dict(scratch=np.zeros(27 * 64 - 1, np.float32)), "scratch must hold"),
    (dict(scratch=None), "scratch must hold"),
    (dict(parallel_tiles=True, num_threads=2), "scratch must hold"),
    (dict(w=np.zeros((4, 26), np.float32)), "weights must have shape"),
    (dict(w=np.zeros((5, 27), np.float32)), "weights must have shape"),
    (dict(x=np.zeros((2, 4, 8, 8), np.float32)), "weights must have shape"),
    (dict(out=np.zeros((2, 4, 7, 8), np.float32)), "output is"),
    (dict(out=np.zeros((3, 4, 8, 8), np.float32)), "output is"),
    (dict(x=np.zeros((2, 3, 8, 8), np.float64)), "float32"),
    (dict(x=np.zeros((2, 3, 8), np.float32)), "4-D"),
    (dict(x=np.zeros((2, 3, 8, 16), np.float32)[..., ::2]), "contiguous"),
    (dict(out=[[0.0]]), "NumPy array"),
    (dict(bias=np.zeros(3, np.float32)), "bias"),
    (dict(residual=np.zeros((2, 4, 8, 7), np.float32)), "residual"),
    (dict(act=7), "slope"),
    (dict(act=7, slope=np.zeros(3, np.float32)), "slope"),
    (dict(act=42), "activation code"),
    (dict(group=2), "group"),
    (dict(kernel=(3,)), "kernel"),
    (dict(pads=(1, 1, -1, 1)), "pads"),
    (dict(direct=True), "direct"),
    (dict(num_threads=0), "num_threads"),
])
def test_kernel_refuses_inconsistent_buffers(change, message):
    with pytest.raises((ValueError, TypeError), match=message):
        k.conv2d_nchw(**_kernel_case(**change))


def test_kernel_empty_batch_or_channels():
    out = k.conv2d_nchw(**_kernel_case(x=np.zeros((0, 3, 8, 8), np.float32), out=np.zeros((0, 4, 8, 8), np.float32)))
    assert out.shape == (0, 4, 8, 8)
    k.conv2d_nchw(**_kernel_case(w=np.zeros((0, 27), np.float32), out=np.zeros((2, 0, 8, 8), np.float32)))
    with pytest.raises(ValueError, match="no channels"):
        k.conv2d_nchw(**_kernel_case(x=np.zeros((2, 0, 8, 8), np.float32), w=np.zeros((4, 0), np.float32)))


def test_kernel_refuses_overlap_and_bad_nhwc_weights():
    big = np.zeros((2, 4, 8, 8), np.float32)
    with pytest.raises(ValueError, match="output overlaps the residual"):
        k.conv2d_nchw(**_kernel_case(x=big[:, :3].copy(), residual=big, out=big))
    x = np.zeros(3 * 2 * 3 * 64, np.float32)
    with pytest.raises(ValueError, match="scratch overlaps the input"):
        k.conv2d_nchw(**_kernel_case(x=x[: 2 * 3 * 64].reshape(2, 3, 8, 8), scratch=x))
    ro = np.zeros(27 * 64, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        k.conv2d_nchw(**_kernel_case(scratch=ro))
    nhwc = dict(x=np.zeros((2, 8, 8, 3), np.float32), w=np.zeros((4, 27), np.float32), bias=None, residual=None,
                out=np.zeros((2, 8, 8, 4), np.float32), scratch=np.zeros(27 * 128, np.float32), kernel=(3, 3),
                strides=(1, 1), dilations=(1, 1), pads=(1, 1, 1, 1))
    with pytest.raises(ValueError, match=r"weights must have shape \(1, 27, 4\)"):
        k.conv2d_nhwc(**nhwc)
    nhwc["w"] = np.zeros((1, 27, 4), np.float32)
    k.conv2d_nhwc(**nhwc)
    # Split over channels (two threads, no parallel tiles), the weights are (M, K).
    with pytest.raises(ValueError, match=r"weights must have shape \(4, 27\)"):
        k.conv2d_nhwc(**nhwc, num_threads=2)
    nhwc.update(w=np.zeros((4, 27), np.float32), scratch=np.zeros(27 * 128 + 4 * 128 - 1, np.float32))
    with pytest.raises(ValueError, match="scratch must hold"):
        k.conv2d_nhwc(**nhwc, num_threads=2)
    nhwc["scratch"] = np.zeros(27 * 128 + 4 * 128, np.float32)
    k.conv2d_nhwc(**nhwc, num_threads=2)
