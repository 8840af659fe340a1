"""A chain that reads a nearest upsample's source where it lies (passes/fuse_upsample_read.py) and
the chain routines' row patterns (routines/eltwise_chain.py, kernels_pyx/eltwise_chain.pyx):
ONNX Runtime's outputs, the layers left, every routine bit for bit against the unfused layers,
the graphs that must not fuse, the export round trip, and a per-channel NHWC operand read
periodically."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from onnx import helper

import workbench
from onnx_helpers import assert_matches_onnxruntime, check_round_trip, make_model
from routine_helpers import bkey, compiled_in, parallel_even_when_small, run_with_routine
from workbench.runtime import cpu
from workbench.onnx_io.ort import run_onnxruntime

CHAIN = ["cpu:float32:nchw/direct", "cpu:float32:nhwc/direct"]
ISAS = [isa for isa in (None, "avx2", "avx512") if isa is None or cpu.supports(isa)]


@pytest.fixture(autouse=True, scope="module")
def _parallel_even_when_small():
    with parallel_even_when_small("eltwise_chain"):
        yield


def node(op, ins, outs, name, **attrs):
    return helper.make_node(op, ins, outs, name=name, **attrs)


def neck(c, h, w, fh, fw, other="full", chain=True, up_first=False, resize=None, opset=17):
    """``x + x * s + up(y)`` (``chain``) or ``x + up(y)``, with ``y`` (1, c, h, w) upsampled by
    (fh, fw); ``s`` of shape ``other``: "full" (the output's), "channel" (1, c, 1, 1), "scalar"."""
    ho, wo = h * fh, w * fw
    s_shape = {"full": [1, c, ho, wo], "channel": [1, c, 1, 1], "scalar": [1, 1, 1, 1]}[other]
    inits = [("scales", np.array([1, 1, fh, fw], np.float32))]
    if opset < 10:
        nodes = [node("Upsample", ["y", "scales"], ["up"], "up", mode="nearest")]
    else:
        nodes = [node("Resize", ["y", "", "scales"], ["up"], "up", **{"mode": "nearest", **(resize or {})})]
    if chain:
        nodes += [node("Mul", ["x", "s"], ["xs"], "mul"), node("Add", ["x", "xs"], ["r"], "add")]
        last, inputs = "r", [("x", [1, c, ho, wo]), ("y", [1, c, h, w]), ("s", s_shape)]
    else:
        last, inputs = "x", [("x", [1, c, ho, wo]), ("y", [1, c, h, w])]
    nodes.append(node("Add", ["up", last] if up_first else [last, "up"], ["out"], "add_up"))
    return make_model(nodes, inputs, [("out", [1, c, ho, wo])], inits, opset=opset)


def assert_bit_exact(graph, model, descriptor, layer="add_up", seed=0):
    """``descriptor`` ran on ``layer`` and gives the unfused reference's outputs exactly."""
    feeds = workbench.random_inputs(graph, seed=seed)
    ours, ref, used = run_with_routine(graph, descriptor, layers=[layer], feeds=feeds)
    assert used == [layer], descriptor
    unfused = workbench.ReferenceExecutor(workbench.load(model.SerializeToString(), fuse=False)).run(feeds)
    for name in unfused:
        np.testing.assert_array_equal(ours[name], unfused[name], err_msg=descriptor)
        np.testing.assert_array_equal(ref[name], unfused[name])


@settings(deadline=None, derandomize=True, max_examples=30)
@given(st.integers(1, 40), st.integers(1, 9), st.integers(1, 9), st.integers(1, 4), st.integers(1, 4),
       st.sampled_from(["full", "channel", "scalar"]), st.booleans(), st.booleans())
def test_upsampled_inputs_are_read_in_place(c, h, w, fh, fw, other, chain, up_first):
    if (fh, fw) == (1, 1):
        fh = 2
    model = neck(c, h, w, fh, fw, other, chain, up_first)
    graph, _ = assert_matches_onnxruntime(model)
    assert [l.op for l in graph] == ["EltwiseChain"]
    layer = graph.layer("add_up")
    slot = layer.inputs.index("y")
    assert layer.attrs["upsample"] == [[slot, fh, fw]] and layer.attrs["fusion"] == "eltwise_chain+upsample"
    assert "up" in layer.fused and graph.meta["passes"]["fuse_upsample_reads"] == ["up"]
    for descriptor in CHAIN:
        assert_bit_exact(graph, model, descriptor)
    check_round_trip(graph, model)


@pytest.mark.parametrize("resize", [dict(coordinate_transformation_mode="half_pixel", nearest_mode="round_prefer_floor"),
                                    dict(coordinate_transformation_mode="asymmetric", nearest_mode="floor")])
def test_resize_spellings_whose_index_is_a_floor_division_fuse(resize):
    model = neck(8, 5, 6, 2, 2, resize=resize)
    graph, _ = assert_matches_onnxruntime(model)
    assert [l.op for l in graph] == ["EltwiseChain"]
    for descriptor in CHAIN:
        assert_bit_exact(graph, model, descriptor)


def test_the_opset_9_upsample_fuses():
    model = neck(6, 4, 3, 2, 2, opset=9)
    graph, _ = assert_matches_onnxruntime(model)
    assert [l.op for l in graph] == ["EltwiseChain"]
    for descriptor in CHAIN:
        assert_bit_exact(graph, model, descriptor)


def test_upsamples_that_are_not_read_in_place_stay():
    cases = {
        # the index is not o // f: half_pixel with ceil picks 0, 1, 1, 2, ...
        "ceil": neck(4, 5, 6, 2, 2, resize=dict(coordinate_transformation_mode="half_pixel", nearest_mode="ceil")),
        "linear": neck(4, 5, 6, 2, 2, resize=dict(mode="linear")),
    }
    # the upsample read by two layers
    two = neck(4, 5, 6, 2, 2)
    two.graph.node.append(node("Relu", ["up"], ["up_relu"], "up_relu"))
    two.graph.output.append(helper.make_tensor_value_info("up_relu", 1, [1, 4, 10, 12]))
    cases["two readers"] = two
    # an operand the routines do not take beside an upsample: one value per pixel
    per_pixel = neck(4, 5, 6, 2, 2, other="full")
    per_pixel.graph.input[2].CopyFrom(helper.make_tensor_value_info("s", 1, [1, 1, 10, 12]))
    cases["per-pixel operand"] = per_pixel
    # batch 2
    batch = neck(4, 5, 6, 2, 2)
    for vi, shape in zip(batch.graph.input, ([2, 4, 10, 12], [2, 4, 5, 6], [2, 4, 10, 12])):
        vi.CopyFrom(helper.make_tensor_value_info(vi.name, 1, shape))
    batch.graph.output[0].CopyFrom(helper.make_tensor_value_info("out", 1, [2, 4, 10, 12]))
    cases["batch 2"] = batch
    for why, model in cases.items():
        graph, _ = assert_matches_onnxruntime(model)
        assert "Resize" in [l.op for l in graph], why
        assert graph.meta["passes"]["fuse_upsample_reads"] == [], why


def test_a_chain_with_an_upsample_writes_its_nhwc_concat_part():
    """The output a channel slice of a Concat: the sources are upsampled on each run (no bound
    kernel), and the part is written where it lies."""
    model = neck(8, 5, 6, 2, 2)
    model.graph.node.append(node("Relu", ["x"], ["xr"], "relu"))
    model.graph.node.append(node("Concat", ["out", "xr"], ["cat"], "cat", axis=1))
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("cat", 1, [1, 16, 10, 12]))
    graph = workbench.load(model.SerializeToString())
    assert graph.layer("add_up").attrs.get("upsample")
    compiled = compiled_in(graph, "nhwc")
    assert compiled.slices[bkey("out", "nhwc")].base == bkey("cat", "nhwc")
    feeds = workbench.random_inputs(graph, seed=1)
    for _ in range(2):   # a second run sees its new inputs upsampled, not the first run's
        feeds = {k: v + 1 for k, v in feeds.items()}
        np.testing.assert_array_equal(compiled.run(feeds)["cat"], run_onnxruntime(model, feeds)["cat"])


def test_nan_and_inf_in_the_source_reach_every_copy():
    model = neck(5, 4, 4, 2, 3, other="channel")
    graph = workbench.load(model.SerializeToString())
    feeds = workbench.random_inputs(graph, seed=2)
    feeds["y"][0, 1, 2, 3] = np.nan
    feeds["y"][0, 2, 0, 0] = np.inf
    feeds["y"][0, 4, 3, 1] = -np.inf
    ref = run_onnxruntime(model, feeds)["out"]
    for descriptor in CHAIN:
        ours, _, _ = run_with_routine(graph, descriptor, layers=["add_up"], feeds=feeds)
        np.testing.assert_array_equal(np.isnan(ours["out"]), np.isnan(ref))
        np.testing.assert_array_equal(np.isposinf(ours["out"]), np.isposinf(ref))
        np.testing.assert_array_equal(np.isneginf(ours["out"]), np.isneginf(ref))
        finite = np.isfinite(ref)
        np.testing.assert_allclose(ours["out"][finite], ref[finite], rtol=1e-6)


@settings(deadline=None, derandomize=True, max_examples=25)
@given(st.integers(1, 300), st.integers(1, 2000), st.booleans())
def test_a_per_channel_nhwc_operand_is_read_periodically(c, pixels, runtime_scale):
    """``x * s + x`` on NHWC, s one value per channel: one row over pixels and channels, the
    operand tiled (at most 256 channels) or, past that, a loop per pixel."""
    h = max(1, pixels // 7)
    w = max(1, pixels // h)
    inits = [] if runtime_scale else [("s", np.linspace(-2, 2, c, dtype=np.float32).reshape(1, c, 1, 1))]
    nodes = [node("Mul", ["x", "s"], ["xs"], "mul"), node("Add", ["xs", "x"], ["out"], "add")]
    inputs = [("x", [1, c, h, w])] + ([("s", [1, c, 1, 1])] if runtime_scale else [])
    model = make_model(nodes, inputs, [("out", [1, c, h, w])], inits)
    graph = workbench.load(model.SerializeToString())
    layer = next(l for l in graph if l.op in ("EltwiseChain", "ChannelAffine"))
    if layer.op != "EltwiseChain":
        return   # a constant scale folds into one per-channel affine (fold_affine), not a chain
    assert_bit_exact(graph, model, "cpu:float32:nhwc/direct", layer=layer.name)


@pytest.mark.parametrize("isa", ISAS)
def test_the_kernel_reads_row_patterns(isa):
    k = cpu.kernel_module("eltwise_chain", isa)
    rng = np.random.default_rng(0)
    y = rng.standard_normal((3, 4, 5)).astype(np.float32)      # NHWC source (h, w, c)
    a = rng.standard_normal((6, 8, 5)).astype(np.float32)      # its 2x2 upsample's shape
    out = np.empty_like(a)
    chain = k.Chain([a, y], [[0, 2 * 8 * 5, 8 * 5, 1], [0, 4 * 5, 0, 0]], out, [1, 3, 2, 8 * 5],
                    [("Add", 0, 1, 0, 0, 0)], rows=[None, (5, 2)])
    for threads in (1, 2):
        out[:] = 0
        chain(threads)
        np.testing.assert_array_equal(out, a + y.repeat(2, 0).repeat(2, 1))
    with pytest.raises(ValueError, match="read up to element"):   # the pattern runs past the source
        k.Chain([a, y[:2]], [[0, 2 * 8 * 5, 8 * 5, 1], [0, 4 * 5, 0, 0]], out, [1, 3, 2, 8 * 5],
                [("Add", 0, 1, 0, 0, 0)], rows=[None, (5, 2)])
    with pytest.raises(ValueError, match="row pattern"):   # a periodic unit longer than a block
        k.Chain([np.zeros(600, np.float32), np.zeros(300, np.float32)], [[0, 0, 0, 1], [0, 0, 0, 0]],
                np.zeros(600, np.float32),
                [1, 1, 1, 600], [("Add", 0, 1, 0, 0, 0)], rows=[None, (300, 0)])
    with pytest.raises(ValueError, match="one entry per input"):
        k.Chain([a, y], [[0, 0, 0, 1], [0, 0, 0, 1]], out, [1, 1, 1, 240], [("Add", 0, 1, 0, 0, 0)], rows=[None])
