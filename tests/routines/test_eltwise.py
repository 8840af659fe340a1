"""Elementwise routines (broadcasting binary ops, activations, ChannelAffine, ufuncs) against the
reference inside the compiled executor, in both layouts."""
import importlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from onnx import TensorProto, helper

import workbench
from onnx_helpers import make_model
from routine_helpers import assert_routine_matches, parallel_even_when_small
from workbench import routines
from workbench.routines.eltwise import kernels
from workbench.ir.graph import Graph, Layer, TensorSpec
from workbench.routines.loops import broadcast_loops

SETTINGS = settings(deadline=None, derandomize=True, max_examples=20)
NCHW, NHWC = "cpu:float32:nchw/direct", "cpu:float32:nhwc/direct"
ACTS = [None, ("Relu", {}), ("Clip", {"min": -0.5, "max": 0.7}), ("LeakyRelu", {"alpha": 0.1}),
        ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}), ("HardSwish", {}), ("Sigmoid", {}), ("Tanh", {}),
        ("Silu", {}), ("Gelu", {"approximate": "none"}), ("Gelu", {"approximate": "tanh"})]


@pytest.fixture(autouse=True, scope="module")
def _parallel_even_when_small():
    with parallel_even_when_small("eltwise"):
        yield


def _load(nodes, inputs, inits=(), opset=17):
    return workbench.load(make_model(nodes, inputs, [("y", None)], initializers=inits, opset=opset).SerializeToString())


def _act_node(act, src, dst):
    op, params = act
    if op == "Clip":
        return [helper.make_node("Clip", [src, "lo", "hi"], [dst])], [("lo", np.float32(params["min"])),
                                                                       ("hi", np.float32(params["max"]))]
    return [helper.make_node(op, [src], [dst], **params)], []


# Operand shapes against an (N, C, H, W) output: same shape, per channel, per (n, c) (squeeze-excite),
# scalar, spatial, and a few odd ones (rank 3, a row, a column).
def _operand_shapes(n, c, h, w):
    return [(n, c, h, w), (1, c, 1, 1), (c, 1, 1), (n, c, 1, 1), (1,), (), (1, 1, h, w), (h, w), (c, h, 1),
            (1, c, h, w), (n, 1, 1, w), (w,)]


@SETTINGS
@given(st.sampled_from(["Add", "Sub", "Mul", "Div"]), st.integers(1, 3), st.integers(1, 19), st.integers(1, 7),
       st.integers(1, 9), st.integers(0, 11), st.booleans(), st.booleans(), st.sampled_from(ACTS),
       st.sampled_from([NCHW, NHWC]))
def test_binary_broadcasts(op, n, c, h, w, which, const, swap, act, descriptor):
    x_shape, o_shape = (n, c, h, w), _operand_shapes(n, c, h, w)[which]
    rng = np.random.default_rng(n * 100 + c)
    inputs, inits = [("x", list(x_shape))], []
    other = rng.uniform(0.5, 2, o_shape).astype(np.float32)
    if const:
        inits.append(("b", other))
    else:
        inputs.append(("b", list(o_shape)))
    operands = ["b", "x"] if swap else ["x", "b"]
    nodes = [helper.make_node(op, operands, ["t" if act else "y"])]
    if act:
        more, extra = _act_node(act, "t", "y")
        nodes += more
        inits += extra
    g = _load(nodes, inputs, inits)
    assert [layer.op for layer in g] == [op], "the activation should be fused"
    assert_routine_matches(g, descriptor)


@SETTINGS
@given(st.sampled_from(["Add", "Mul"]), st.integers(1, 3), st.integers(1, 9), st.integers(1, 5), st.booleans())
def test_binary_non_4d_channels_first_only(op, a, b, c, same):
    shapes = [(a, b, c), (a, b, c) if same else (b, 1)]
    g = _load([helper.make_node(op, ["x", "z"], ["y"])], [("x", list(shapes[0])), ("z", list(shapes[1]))])
    assert_routine_matches(g, NCHW)
    layer = next(iter(g))
    assert not routines.get(op, NHWC).applies(layer, g.input_specs(layer))


def test_binary_fused_prelu_per_channel_and_uniform():
    for slope in (np.linspace(0.1, 0.5, 6, dtype=np.float32).reshape(6, 1, 1), np.full((1,), 0.2, np.float32)):
        g = _load([helper.make_node("Add", ["x", "z"], ["t"]), helper.make_node("PRelu", ["t", "s"], ["y"])],
                  [("x", [2, 6, 3, 5]), ("z", [2, 6, 3, 5])], [("s", slope)])
        assert [layer.op for layer in g] == ["Add"]
        for d in (NCHW, NHWC):
            assert_routine_matches(g, d)


def test_binary_rejects_what_it_cannot_do():
    # Integer operands; a 5-D broadcast needing five loops.
    g = _load([helper.make_node("Add", ["x", "z"], ["y"])],
              [("x", [2, 3], TensorProto.INT64), ("z", [2, 3], TensorProto.INT64)])
    layer = next(iter(g))
    assert not routines.get("Add", NCHW).applies(layer, g.input_specs(layer))
    g = _load([helper.make_node("Mul", ["x", "z"], ["y"])], [("x", [2, 3, 4, 5, 6]), ("z", [2, 1, 4, 1, 6])])
    layer = next(iter(g))
    assert not routines.get("Mul", NCHW).applies(layer, g.input_specs(layer))
    assert broadcast_loops((2, 3, 4, 5, 6), [((2, 3, 4, 5, 6), False), ((2, 1, 4, 1, 6), False)], False) is None


def test_broadcast_loops_coalesce():
    # Same shape: one flat loop; squeeze-excite in NHWC: (n, h*w, c) with the scale strided by c on n.
    dims, (sa, sb) = broadcast_loops((2, 3, 4, 5), [((2, 3, 4, 5), True), ((2, 3, 4, 5), True)], True)
    assert dims == [1, 1, 1, 120] and sa == sb == [0, 0, 0, 1]
    dims, (sa, sb) = broadcast_loops((2, 3, 4, 5), [((2, 3, 4, 5), True), ((2, 3, 1, 1), False)], True)
    assert dims == [1, 2, 20, 3] and sa == [0, 60, 3, 1] and sb == [0, 3, 0, 1]
    dims, (sa, sb) = broadcast_loops((2, 3, 4, 5), [((2, 3, 4, 5), False), ((2, 3, 1, 1), False)], False)
    assert dims == [1, 1, 6, 20] and sb == [0, 0, 1, 0]


@SETTINGS
@given(st.sampled_from(ACTS[1:] + [("PRelu", {})]), st.sampled_from([(2, 5, 3, 7), (1, 16, 9, 9), (3, 7), (4, 2, 6)]),
       st.sampled_from([NCHW, NHWC]))
def test_activation_layers(act, shape, descriptor):
    inits = []
    if act[0] == "PRelu":
        slope = np.linspace(0.05, 0.5, shape[1], dtype=np.float32).reshape((shape[1],) + (1,) * (len(shape) - 2))
        nodes, inits = [helper.make_node("PRelu", ["x", "s"], ["y"])], [("s", slope)]
    else:
        nodes, inits = _act_node(act, "x", "y")
    g = _load(nodes, [("x", list(shape))], inits)
    layer = next(iter(g))
    applies = routines.get(layer.op, descriptor).applies(layer, g.input_specs(layer))
    assert applies == (descriptor == NCHW or len(shape) == 4)
    if applies:
        assert_routine_matches(g, descriptor)


def _affine_graph(shape, act=None):
    c = shape[1]
    rng = np.random.default_rng(c)
    layer = Layer("aff", "ChannelAffine", ["x", "scale", "shift"], ["y"],
                  consts={1: rng.standard_normal(c).astype(np.float32), 2: rng.standard_normal(c).astype(np.float32)},
                  out_specs=[TensorSpec(shape)])
    if act:
        layer.attrs.update(activation=act[0], activation_params=act[1])
    g = Graph("affine", {"x": TensorSpec(shape)}, ["y"])
    g.add_layer(layer)
    return g


@SETTINGS
@given(st.sampled_from([(2, 5, 3, 7), (1, 33, 4, 4), (3, 7), (2, 4, 9)]), st.sampled_from(ACTS),
       st.sampled_from([NCHW, NHWC]))
def test_channel_affine(shape, act, descriptor):
    g = _affine_graph(shape, act)
    layer = next(iter(g))
    if descriptor == NHWC and len(shape) != 4:
        assert not routines.get("ChannelAffine", descriptor).applies(layer, g.input_specs(layer))
    else:
        assert_routine_matches(g, descriptor)


def test_channel_affine_fused_prelu():
    g = _affine_graph((2, 4, 3, 3), ("PRelu", {"slope": np.array([0.1, 0.2, 0.3, 0.4], np.float32).reshape(4, 1, 1)}))
    for d in (NCHW, NHWC):
        assert_routine_matches(g, d)


@pytest.mark.parametrize("op", ["Sqrt", "Exp", "Erf", "Pow"])
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_ufuncs(op, layout):
    descriptor = f"cpu:float32:{layout}/" + ("direct" if op in ("Exp", "Erf") else "ufunc")
    inits = [("e", np.int64(3))] if op == "Pow" else []
    nodes = [helper.make_node("Abs", ["x"], ["a"]), helper.make_node(op, ["a", "e"] if op == "Pow" else ["a"], ["y"])]
    g = _load(nodes, [("x", [2, 3, 4, 5])], inits)
    assert_routine_matches(g, descriptor)


def test_pow_needs_a_scalar_constant_exponent_and_cast_runs():
    g = _load([helper.make_node("Pow", ["x", "e"], ["y"])], [("x", [2, 3]), ("e", [2, 3])])
    layer = next(iter(g))
    assert not routines.get("Pow", "cpu:float32:nchw/ufunc").applies(layer, g.input_specs(layer))
    g = _load([helper.make_node("Cast", ["x"], ["t"], to=TensorProto.INT32),
               helper.make_node("Cast", ["t"], ["y"], to=TensorProto.FLOAT)], [("x", [2, 3, 4])])
    assert_routine_matches(g, "cpu:float32:nchw/ufunc", expect_layers=[layer.name for layer in g])


def test_kernel_twins_check_shapes():
    from workbench._kernels import eltwise as k
    a = np.ones(12, np.float32)
    out = np.empty(12, np.float32)
    k.binary(a, a, out, (1, 1, 3, 4), (0, 0, 4, 1), (0, 0, 0, 1), "Add")
    with pytest.raises(ValueError, match="read up to"):
        k.binary(a, a, out, (1, 1, 3, 4), (0, 0, 5, 1), (0, 0, 0, 1), "Add")
    with pytest.raises(ValueError, match="elements"):
        k.binary(a, a, np.empty(11, np.float32), (1, 1, 3, 4), (0, 0, 4, 1), (0, 0, 4, 1), "Add")
    with pytest.raises(ValueError, match="unknown op"):
        k.binary(a, a, out, (1, 1, 3, 4), (0, 0, 4, 1), (0, 0, 4, 1), "Pow")
    with pytest.raises(ValueError, match="non-negative"):
        k.binary(a, a, out, (1, 1, 3, 4), (0, 0, -4, 1), (0, 0, 4, 1), "Add")
    with pytest.raises(ValueError, match="4 values"):
        k.binary(a, a, out, (3, 4), (4, 1), (4, 1), "Add")
    with pytest.raises(TypeError, match="float32"):
        k.binary(a.astype(np.float64), a, out, (1, 1, 3, 4), (0, 0, 4, 1), (0, 0, 4, 1), "Add")
    with pytest.raises(ValueError, match="contiguous"):
        k.binary(np.ones(24, np.float32)[::2], a, out, (1, 1, 3, 4), (0, 0, 4, 1), (0, 0, 4, 1), "Add")
    with pytest.raises(ValueError, match="rows \\* cols"):
        k.channel_rows(a, out, 3, 5, True)
    with pytest.raises(ValueError, match="both"):
        k.channel_rows(a, out, 3, 4, True, scale=np.ones(3, np.float32))
    with pytest.raises(ValueError, match="C == cols"):
        k.channel_rows(a, out, 4, 3, False, np.ones(4, np.float32), np.ones(4, np.float32))
    with pytest.raises(ValueError, match="slope"):
        k.channel_rows(a, out, 3, 4, True, act=7)
    with pytest.raises(ValueError, match="equal"):
        k.channel_rows(a, out, 3, 4, True, np.ones(3, np.float32), np.ones(2, np.float32))


def test_sigmoid_kernel_is_accurate_at_the_extremes():
    # The vectorised exp is clamped at exp(-87): below that the sigmoid is ~1e-38 instead of smaller.
    from workbench.ir.ops.activation import ACTIVATIONS
    x = np.concatenate([np.array([np.inf, -np.inf, 0, -0.0, 87, -87, -100, 1e-8, -1e-8], np.float32),
                        np.linspace(-40, 40, 4001, dtype=np.float32)])
    for module in dict.fromkeys((kernels("eltwise"), importlib.import_module("workbench._kernels.eltwise"))):
        out = module.channel_rows(x, np.empty_like(x), 1, x.size, True, act=6)
        ref = ACTIVATIONS["Sigmoid"](x, {})
        np.testing.assert_allclose(out, ref, rtol=3e-7, atol=2e-38)


def _vmath_reference(fn, x):
    """float64 truths (scipy) for eltwise.unary's functions."""
    from scipy.special import erf, erfc, expit
    x = x.astype(np.float64)
    with np.errstate(all="ignore"):
        return {"Sigmoid": lambda: expit(x), "Tanh": lambda: np.tanh(x), "Silu": lambda: x * expit(x),
                "Gelu": lambda: 0.5 * x * erfc(-x / np.sqrt(2)), "Erf": lambda: erf(x), "Exp": lambda: np.exp(x),
                "GeluTanh": lambda: x * expit(2 * np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3))}[fn]()


# Relative error bound per function on normal float32 results.  GELU's erf form is exp(-x^2 / 2)
# times a fit made down to x = -5.75 (6e-7 relative); below, where |GELU| < 6e-8, only its absolute
# error is checked (ONNX Runtime's erf spelling returns -0 from -5.54).  GELU-tanh and SiLU inherit
# the rounding of their sigmoid's argument (|v| 2^-24 relative).
VMATH_RTOL = {"Sigmoid": 3e-7, "Tanh": 3e-7, "Erf": 3e-7, "Exp": 3e-7, "Silu": 6e-6, "Gelu": 1e-6, "GeluTanh": 1.5e-5}
FLOATS = st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=True)


@SETTINGS
@given(st.sampled_from(sorted(VMATH_RTOL)), st.lists(FLOATS, min_size=1, max_size=300),
       st.floats(0.0625, 120, width=32))
def test_vector_math_against_float64(fn, values, spread):
    rng = np.random.default_rng(len(values))
    dense = (rng.standard_normal(257) * spread).astype(np.float32)   # the interesting range, densely
    x = np.concatenate([np.asarray(values, np.float32), dense, np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], np.float32)])
    for module in dict.fromkeys((kernels("eltwise"), importlib.import_module("workbench._kernels.eltwise"))):
        out = module.unary(x, np.empty_like(x), fn, num_threads=2)
        ref = _vmath_reference(fn, x)
        with np.errstate(over="ignore", invalid="ignore"):
            ref32 = ref.astype(np.float32)
        np.testing.assert_array_equal(np.isnan(out), np.isnan(ref32), err_msg=f"{fn}: NaN where the reference has none")
        inf = np.isinf(ref32)
        np.testing.assert_array_equal(out[inf], ref32[inf])
        normal = np.isfinite(ref32) & (np.abs(ref32) >= np.finfo(np.float32).tiny)
        tail = np.isfinite(x) & (x <= -5.6) if fn == "Gelu" else np.zeros(x.shape, bool)
        normal &= ~tail
        assert np.all(np.abs(out[tail] - ref[tail]) <= 6e-8), fn
        rel = np.abs(out[normal] - ref[normal]) / np.abs(ref[normal])
        assert rel.size == 0 or rel.max() <= VMATH_RTOL[fn], (fn, rel.max(), x[normal][np.argmax(rel)])
        tiny = np.isfinite(ref32) & ~normal & ~tail & (np.abs(x) < 1e30)
        assert np.all(np.abs(out[tiny] - ref[tiny]) <= 2e-37), fn


def test_unary_kernel_checks_its_arguments():
    k = kernels("eltwise")
    a = np.ones(8, np.float32)
    with pytest.raises(ValueError, match="unknown function"):
        k.unary(a, a, "Cos")
    with pytest.raises(ValueError, match="elements"):
        k.unary(a, np.empty(7, np.float32), "Exp")
    with pytest.raises(TypeError, match="float32"):
        k.unary(a.astype(np.float64), a, "Exp")


@pytest.mark.parametrize("threads", [1, 2])
def test_binary_reads_and_writes_channel_slices(threads):
    """A CSP bottleneck's shortcut Add writing its Concat part: operands and output as channel
    slices of wider NHWC buffers, a per-channel constant broadcast; NumPy's result, and the
    channels around the output untouched."""
    k = kernels("eltwise")
    rng = np.random.default_rng(threads)
    n, h, w, c = 2, 5, 7, 24
    a = rng.standard_normal((n, h, w, c + 8)).astype(np.float32)[..., 8:]
    b = rng.standard_normal((n, h, w, 2 * c)).astype(np.float32)[..., :c]
    per_channel = rng.standard_normal(c).astype(np.float32)
    big = np.full((n, h, w, 3 * c), 7.0, np.float32)
    out = big[..., c:2 * c]
    st = lambda v: [x // 4 for x in v.strides]
    k.binary(a, b, out, out.shape, st(a), st(b), "Add", 1, num_threads=threads)   # with a fused ReLU
    np.testing.assert_array_equal(out, np.maximum(a + b, 0))
    k.Binary(a, per_channel, out, out.shape, st(a), [0, 0, 0, 1], "Mul")(threads)
    np.testing.assert_array_equal(out, a * per_channel)
    assert (big[..., :c] == 7).all() and (big[..., 2 * c:] == 7).all()
    with pytest.raises(ValueError, match="loop nest's shape"):
        k.binary(a, b, out, (n, h * w, 1, c), st(a)[:1] + [st(a)[2], 0, 1], st(b)[:1] + [st(b)[2], 0, 1], "Add")
    with pytest.raises(ValueError, match="read up to"):
        k.binary(a, b, out, out.shape, [x * 2 for x in st(a)], st(b), "Add")


@pytest.mark.parametrize("shape", [(1, 24, 10, 10), (2, 96, 5, 7), (1, 256, 3, 3), (1, 257, 2, 2), (3, 5, 1, 1)])
@pytest.mark.parametrize("op", ["Sub", "Mul", "Div"])
@pytest.mark.parametrize("swap", [False, True])
def test_a_per_channel_nhwc_operand_runs_as_one_periodic_row(shape, op, swap):
    """``x op s`` on NHWC with ``s`` one value per (n, c): a one-step chain whose rows are whole
    planes (``periodic_rows``) where the channels fit its tile, NumPy's result exactly."""
    n, c, h, w = shape
    nodes = [helper.make_node(op, ["s", "x"] if swap else ["x", "s"], ["y"])]
    g = _load(nodes, [("x", list(shape)), ("s", [n, c, 1, 1])])
    layer = next(iter(g))
    rng = np.random.default_rng(c)
    x = rng.uniform(0.5, 2, (n, h, w, c)).astype(np.float32)
    s = rng.uniform(0.5, 2, (n, 1, 1, c)).astype(np.float32)
    out = np.empty_like(x)
    r = routines.routines_for(op)[NHWC]
    call = r.bind(layer, r.prepare(layer), [s, x] if swap else [x, s], [out])
    assert isinstance(call, kernels("eltwise_chain").Chain) == (c <= 256 and h * w > 1), type(call)
    for threads in (1, 2):
        out[:] = np.nan
        call(threads)
        expect = {"Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op](*((s, x) if swap else (x, s)))
        np.testing.assert_array_equal(out, expect)
