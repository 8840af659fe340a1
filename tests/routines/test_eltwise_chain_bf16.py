"""``cpu:bfloat16:{nchw,nhwc}/direct`` for EltwiseChain (routines/eltwise_chain_bf16.py) and the
chain kernel's bfloat16 operands (kernels_pyx/eltwise_chain.pyx).

The kernel widens bfloat16 exactly, runs the float32 steps and rounds the output once, so the
result is an exact function of float32 arithmetic: the float32 reference on the inputs rounded to
bfloat16, rounded to bfloat16 (ml_dtypes, nearest even).  The tests assert that bit for bit."""
import ml_dtypes
import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st
from onnx import helper

import workbench
from onnx_helpers import make_model
from routine_helpers import bkey, compiled_in, parallel_even_when_small, run_with_routine
from workbench.runtime import cpu

BF16 = np.dtype(ml_dtypes.bfloat16)
ISAS = [isa for isa in (None, "avx2", "avx512") if isa is None or cpu.supports(isa)]
NATIVE = cpu.kernel_module("gemm_bf16", "avx512bf16")
needs_bf16 = pytest.mark.skipif(NATIVE is None or not NATIVE.available, reason="this CPU lacks AVX512-BF16")
SETTINGS = dict(deadline=None, derandomize=True, database=None)


@pytest.fixture(autouse=True, scope="module")
def _parallel_even_when_small():
    with parallel_even_when_small("eltwise_chain"):
        yield


def node(op, ins, outs, name, **attrs):
    return helper.make_node(op, ins, outs, name=name, **attrs)


def rounded(a):
    return np.asarray(a, np.float32).astype(BF16).astype(np.float32)


def assert_exact_bf16(graph, descriptor, feeds, layer, threads=2):
    """``descriptor`` ran on ``layer``; every output is the reference on the rounded inputs, rounded."""
    feeds = {k: rounded(v) for k, v in feeds.items()}
    ours, ref, used = run_with_routine(graph, descriptor, layers=[layer], feeds=feeds, num_threads=threads)
    assert used == [layer], descriptor
    for name, r in ref.items():
        np.testing.assert_array_equal(ours[name], rounded(r), err_msg=f"{descriptor}: {name}")


# -- the kernel, on every built ISA (plain C: no AVX512-BF16 needed) --------------------------------
@pytest.mark.parametrize("isa", ISAS)
def test_the_kernel_widens_and_rounds_bfloat16(isa):
    k = cpu.kernel_module("eltwise_chain", isa)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 37)).astype(np.float32).astype(BF16)
    s = rng.standard_normal(37).astype(np.float32)              # a float32 per-column operand
    a[0, 0], a[1, 3], a[2, 5] = np.nan, np.inf, -np.inf
    for out_dtype in (BF16, np.float32):
        out = np.empty((5, 37), out_dtype)
        chain = k.Chain([a, s], [[0, 0, 37, 1], [0, 0, 0, 1]], out, [1, 1, 5, 37],
                        [("Mul", 0, 1, 0, 0.0, 0.0), ("Add", -1, 0, 0, 0.0, 0.0)])
        for threads in (1, 2):
            out[...] = 0
            chain(threads)
            wide = a.astype(np.float32)
            want = (wide * s + wide).astype(out_dtype)
            np.testing.assert_array_equal(out.astype(np.float32), want.astype(np.float32))
    # raw uint16 bits are bfloat16 too; a per-channel bfloat16 operand read through a pattern
    out = np.empty((4, 6 * 5), np.uint16)
    x = rng.standard_normal((4, 6 * 5)).astype(np.float32).astype(BF16)
    c = rng.standard_normal(5).astype(np.float32).astype(BF16)
    k.Chain([x.view(np.uint16), c.view(np.uint16)], [[0, 0, 30, 1], [0, 0, 0, 0]], out, [1, 1, 4, 30],
            [("Sub", 0, 1, 1, 0.0, 0.0)], rows=[None, (5, 0)])(2)
    want = np.maximum(x.astype(np.float32) - np.tile(c.astype(np.float32), 6), 0).astype(BF16)
    np.testing.assert_array_equal(out.view(BF16).astype(np.float32), want.astype(np.float32))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n", [1, 15, 16, 17, 24, 40])
def test_the_kernel_rounds_ties_to_even_and_keeps_nan_on_short_rows(isa, n):
    """Float32 sums exactly halfway between two bfloat16 values, rows of 1 to 40 (the AVX-512
    build's masked tails), NaN, infinities and the largest finite values: as ml_dtypes rounds."""
    k = cpu.kernel_module("eltwise_chain", isa)
    rng = np.random.default_rng(n)
    base = rng.standard_normal((7, n)).astype(np.float32).astype(BF16).astype(np.float32)
    bits = base.view(np.uint32) | np.uint32(0x8000) * (rng.integers(0, 2, base.shape).astype(np.uint32))
    x = bits.view(np.float32)                             # half of them exactly on a tie
    x.flat[:6] = [np.nan, np.inf, -np.inf, 3.3895314e38, -3.3895314e38, 1.0 + 2.0 ** -8]
    zero = np.zeros(n, np.float32)
    big = np.zeros((1, 1, 7, n + 8), BF16)
    out = big[..., 4:4 + n]
    k.Chain([x, zero], [[0, 0, n, 1], [0, 0, 0, 1]], out, [1, 1, 7, n], [("Add", 0, 1, 0, 0.0, 0.0)])(2)
    np.testing.assert_array_equal(out[0, 0].view(np.uint16), x.astype(BF16).view(np.uint16))
    assert not big[..., :4].astype(np.float32).any() and not big[..., 4 + n:].astype(np.float32).any()


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_the_kernel_takes_short_bfloat16_rows_several_at_a_time(isa, threads):
    """Rows of 24 channels written into a 96-channel buffer (an NHWC Concat part): blocks of
    several rows gathered end to end, a per-channel pattern, a float32 input read every other
    element, 23 rows (not a whole number of blocks) over 3 outer rows; NaN kept."""
    k = cpu.kernel_module("eltwise_chain", isa)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 23, 24)).astype(np.float32).astype(BF16)
    x[1, 7, 5] = np.nan
    se = rng.standard_normal(24).astype(np.float32).astype(BF16)
    f = rng.standard_normal((3, 23, 48)).astype(np.float32)            # read at even positions
    big = np.zeros((1, 3, 23, 96), BF16)
    out = big[..., 24:48]
    chain = k.Chain([x, se, f], [[0, 23 * 24, 24, 1], [0, 0, 0, 0], [0, 23 * 48, 48, 2]], out, [1, 3, 23, 24],
                    [("Mul", 0, 1, 0, 0.0, 0.0), ("Add", -1, 0, 0, 0.0, 0.0), ("Sub", -2, 2, 1, 0.0, 0.0)],
                    rows=[None, (24, 0), None])
    chain(threads)
    wide = x.astype(np.float32)
    want = np.maximum(wide * se.astype(np.float32) + wide - f[:, :, ::2], 0).astype(BF16)
    np.testing.assert_array_equal(out[0].astype(np.float32), want.astype(np.float32))
    assert np.isnan(out[0, 1, 7, 5].astype(np.float32))
    assert not big[..., :24].astype(np.float32).any() and not big[..., 48:].astype(np.float32).any()


@pytest.mark.parametrize("isa", ISAS)
def test_the_kernel_repeats_a_bfloat16_source(isa):
    """A nearest upsample's bfloat16 source read where it lies (the repeated row pattern)."""
    k = cpu.kernel_module("eltwise_chain", isa)
    rng = np.random.default_rng(1)
    y = rng.standard_normal((3, 4, 5)).astype(np.float32).astype(BF16)   # NHWC source (h, w, c)
    a = rng.standard_normal((6, 8, 5)).astype(np.float32).astype(BF16)   # its 2x2 upsample's shape
    out = np.empty_like(a)
    chain = k.Chain([a, y], [[0, 2 * 8 * 5, 8 * 5, 1], [0, 4 * 5, 0, 0]], out, [1, 3, 2, 8 * 5],
                    [("Add", 0, 1, 0, 0, 0)], rows=[None, (5, 2)])
    for threads in (1, 2):
        out[...] = 0
        chain(threads)
        want = (a.astype(np.float32) + y.astype(np.float32).repeat(2, 0).repeat(2, 1)).astype(BF16)
        np.testing.assert_array_equal(out.astype(np.float32), want.astype(np.float32))
    ones = np.ones(3, BF16)   # and a single-channel source, repeated element by element
    out1 = np.empty(6, BF16)
    k.Chain([ones], [[0, 0, 0, 0]], out1, [1, 1, 1, 6], [("Add", 0, 0, 0, 0, 0)], rows=[(1, 2)])(1)
    np.testing.assert_array_equal(out1.astype(np.float32), np.full(6, 2, np.float32))


def test_the_kernel_checks_bfloat16_operands():
    k = cpu.kernel_module("eltwise_chain", None)
    x = np.ones((2, 3), BF16)
    with pytest.raises(ValueError, match="read-only"):
        ro = np.empty((2, 3), BF16)
        ro.flags.writeable = False
        k.Chain([x], [[0, 0, 3, 1]], ro, [1, 1, 2, 3], [("Add", 0, 0, 0, 0.0, 0.0)])
    with pytest.raises(ValueError, match="contiguous last axis"):
        k.Chain([np.ones((3, 4), BF16)[:, ::2]], [[0, 0, 2, 1]], np.empty((3, 2), BF16), [1, 1, 3, 2],
                [("Add", 0, 0, 0, 0.0, 0.0)])
    with pytest.raises(TypeError, match="float32"):
        k.Chain([x.astype(np.float16)], [[0, 0, 3, 1]], np.empty((2, 3), BF16), [1, 1, 2, 3],
                [("Add", 0, 0, 0, 0.0, 0.0)])
    with pytest.raises(ValueError, match="read up to element"):   # bounds in elements of 2 bytes
        k.Chain([np.ones(5, BF16)], [[0, 0, 3, 1]], np.empty((2, 3), BF16), [1, 1, 2, 3],
                [("Add", 0, 0, 0, 0.0, 0.0)])


# -- the routines ------------------------------------------------------------------------------------
SHAPES = [(1, 6, 5, 7), (1, 6, 1, 1), (1, 1, 1, 1), (7,), (5, 7), (1, 6, 5, 1)]


@needs_bf16
@settings(max_examples=25, **SETTINGS)
@given(st.lists(st.tuples(st.sampled_from(["Add", "Sub", "Mul", "Div"]), st.sampled_from(SHAPES), st.booleans(),
                          st.sampled_from([None, "Relu"])), min_size=2, max_size=6),
       st.sampled_from(["nchw", "nhwc"]), st.integers(1, 3), st.integers(0, 3))
def test_random_chains_are_the_rounded_float32_chain(steps, layout, threads, seed):
    # no Div after a Relu: dividing by its zeros gives infinities whose sign is the zero's, and
    # which zero a Relu of a negative zero returns differs between NumPy and MAXPS
    assume(not any(op == "Div" for op, *_ in steps[min([i for i, s in enumerate(steps) if s[3]] or [99]) + 1:]))
    nodes, inputs, prev = [], [("x", [1, 6, 5, 7])], "x"
    for i, (op, shape, first, act) in enumerate(steps):
        inputs.append((f"v{i}", list(shape)))
        out = f"t{i}" if act is None else f"p{i}"
        nodes.append(node(op, [f"v{i}", prev] if first else [prev, f"v{i}"], [out], f"op{i}"))
        if act is not None:
            nodes.append(node(act, [out], [f"t{i}"], f"act{i}"))
        prev = f"t{i}"
    graph = workbench.load(make_model(nodes, inputs, [(prev, [1, 6, 5, 7])]).SerializeToString())
    assert [l.op for l in graph] == ["EltwiseChain"]
    feeds = {k: (v + np.float32(3.0) * np.sign(v)).astype(np.float32)
             for k, v in workbench.random_inputs(graph, seed=seed).items()}
    assert_exact_bf16(graph, f"cpu:bfloat16:{layout}/direct", feeds, f"op{len(steps) - 1}", threads)


def neck(c, h, w, s_shape):
    """``x + x * s + up(y)``: PP-OCR's detection neck, the upsample read in place."""
    inits = [("scales", np.array([1, 1, 2, 2], np.float32))]
    nodes = [node("Resize", ["y", "", "scales"], ["up"], "up", mode="nearest"),
             node("Mul", ["x", "s"], ["xs"], "mul"), node("Add", ["x", "xs"], ["r"], "add"),
             node("Add", ["r", "up"], ["out"], "add_up")]
    inputs = [("x", [1, c, 2 * h, 2 * w]), ("y", [1, c, h, w]), ("s", s_shape)]
    return make_model(nodes, inputs, [("out", [1, c, 2 * h, 2 * w])], inits)


@needs_bf16
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("s_shape", [[1, 24, 1, 1], [1, 1, 1, 1], [1, 24, 10, 12]])
def test_an_upsampling_neck_in_bfloat16(layout, s_shape):
    model = neck(24, 5, 6, s_shape)
    graph = workbench.load(model.SerializeToString())
    assert graph.layer("add_up").attrs.get("upsample")
    feeds = workbench.random_inputs(graph, seed=3)
    feeds["y"][0, 1, 2, 3], feeds["y"][0, 2, 0, 0] = np.nan, np.inf   # reach every copy, as in float32
    assert_exact_bf16(graph, f"cpu:bfloat16:{layout}/direct", feeds, "add_up")


@needs_bf16
def test_a_bfloat16_chain_writes_its_nhwc_concat_part_in_place():
    """Output a channel slice of the Concat's bfloat16 NHWC buffer, written where it lies."""
    rng = np.random.default_rng(4)
    nodes = [node("Relu", ["a"], ["ar"], "relu"), node("Mul", ["ar", "b"], ["m"], "mul"),
             node("Sub", ["m", "ar"], ["c"], "sub"), node("Concat", ["c", "ar"], ["out"], "cat", axis=1)]
    model = make_model(nodes, [("a", [1, 6, 4, 5]), ("b", [1, 6, 4, 5])], [("out", [1, 12, 4, 5])])
    graph = workbench.load(model.SerializeToString())
    assert graph.layer("sub").op == "EltwiseChain"
    assignment = {"relu": "cpu:float32:nhwc/direct", "sub": "cpu:bfloat16:nhwc/direct",
                  "cat": "cpu:bfloat16:nhwc/copy"}
    from workbench.runtime.compiled import CompiledModel
    assignment = {l.name: assignment.get(l.name, compiled_in(graph, "nhwc").assignment[l.name]) for l in graph}
    compiled = CompiledModel(graph, assignment, num_threads=2)
    assert compiled.slices[bkey("c", "nhwc", "bfloat16")].base == bkey("out", "nhwc", "bfloat16")
    feeds = {k: rng.standard_normal(v).astype(np.float32) for k, v in (("a", (1, 6, 4, 5)), ("b", (1, 6, 4, 5)))}
    ar = np.maximum(feeds["a"], 0)
    want = np.concatenate([rounded(rounded(ar) * rounded(feeds["b"]) - rounded(ar)), rounded(ar)], axis=1)
    np.testing.assert_array_equal(compiled.run(feeds)["out"], want)


@needs_bf16
def test_a_squeeze_excite_sum_written_into_its_concat_part_reads_the_scale_as_a_pattern():
    """``x * se + x`` into a channel slice of a Concat: the per-channel scale read through a
    periodic pattern (one a job) while the rows are taken several at a time."""
    rng = np.random.default_rng(6)
    nodes = [node("Relu", ["a"], ["ar"], "relu"), node("Mul", ["ar", "se"], ["m"], "mul"),
             node("Add", ["m", "ar"], ["c"], "add"), node("Concat", ["c", "ar"], ["out"], "cat", axis=1)]
    model = make_model(nodes, [("a", [1, 24, 5, 7]), ("se", [1, 24, 1, 1])], [("out", [1, 48, 5, 7])])
    graph = workbench.load(model.SerializeToString())
    layer = graph.layer("add")
    assert layer.op == "EltwiseChain"
    from workbench.runtime.compiled import CompiledModel
    assignment = {"relu": "cpu:float32:nhwc/direct", "add": "cpu:bfloat16:nhwc/direct", "cat": "cpu:bfloat16:nhwc/copy"}
    assignment = {l.name: assignment.get(l.name, compiled_in(graph, "nhwc").assignment[l.name]) for l in graph}
    compiled = CompiledModel(graph, assignment, num_threads=2)
    assert compiled.slices[bkey("c", "nhwc", "bfloat16")].base == bkey("out", "nhwc", "bfloat16")
    feeds = {"a": rng.standard_normal((1, 24, 5, 7)).astype(np.float32),
             "se": rng.standard_normal((1, 24, 1, 1)).astype(np.float32)}
    ar = rounded(np.maximum(feeds["a"], 0))
    want = np.concatenate([rounded(ar * rounded(feeds["se"]) + ar), ar], axis=1)
    np.testing.assert_array_equal(compiled.run(feeds)["out"], want)


@needs_bf16
@settings(max_examples=20, **SETTINGS)
@given(st.sampled_from(["Add", "Sub", "Mul", "Div"]), st.sampled_from(SHAPES), st.booleans(),
       st.sampled_from([None, "Relu"]), st.booleans(), st.sampled_from(["nchw", "nhwc"]), st.integers(1, 3),
       st.integers(0, 3))
def test_a_lone_binary_layer_is_a_chain_of_one_step(op, shape, first, act, const, layout, threads, seed):
    """An Add/Sub/Mul/Div that no chain took runs in bfloat16 as a one-step chain: the rounded
    float32 layer, bit for bit, its operand broadcast, constant or not, its activation fused."""
    assume(not (op == "Div" and act))
    rng = np.random.default_rng(seed)
    v = (rng.standard_normal(shape) + 3 * np.sign(rng.standard_normal(shape))).astype(np.float32)
    ins, inits = [("x", [1, 6, 5, 7])], []
    if const:
        inits = [("v", rounded(v))]
    else:
        ins.append(("v", list(shape)))
    out = "y" if act is None else "p"
    nodes = [node(op, ["v", "x"] if first else ["x", "v"], [out], "op")]
    if act is not None:
        nodes.append(node(act, ["p"], ["y"], "act"))
    graph = workbench.load(make_model(nodes, ins, [("y", [1, 6, 5, 7])], inits).SerializeToString())
    assert [l.op for l in graph] == [op]
    feeds = {k: (a + np.float32(3.0) * np.sign(a)).astype(np.float32)
             for k, a in workbench.random_inputs(graph, seed=seed).items()}
    assert_exact_bf16(graph, f"cpu:bfloat16:{layout}/direct", feeds, "op", threads)
