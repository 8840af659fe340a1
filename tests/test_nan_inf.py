"""NaN and infinities propagate as in ONNX Runtime: NaN, +Inf and -Inf placed at chosen input
positions (a corner, the interior, the last element, and all three at once) go through single-op
graphs under every routine that applies to the op, and through the zoo models under the tuned
plan and every routine family; the NaN, +Inf and -Inf positions of every output must be ONNX
Runtime's, and the finite values within 1e-4 relative.

Cases marked ``xfail(strict=True)`` fail today in kernels this test's owner does not own; each
names the routine, the kernel and the line.  Strict: once fixed they pass, the mark fails, and
whoever fixed it removes the mark.
"""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import workbench
from workbench import routines, zoo
from workbench.tuning.filters import assign
from workbench.onnx_io.ort import run_onnxruntime
from workbench.runtime.compiled import CompiledModel
from workbench.session import Session

SPECIALS = {"nan": np.nan, "+inf": np.inf, "-inf": -np.inf}

#: Relu written ``v if v > 0 else 0`` turns NaN into 0 (ONNX Runtime keeps NaN): the shared
#: epilogue's ``activate`` (kernels_pyx/_epilogue.pxd line 22), which Gemm+Relu reaches through
#: linalg.pyx ``_epilogue`` -> ``epilogue_rows``; the same select in ``activate_run`` (line 50;
#: LeakyRelu/PRelu's min/max selects at line 60 too) and in eltwise.pyx ``_act_row`` (line 135,
#: the Relu layer).  Owned by the elementwise/epilogue developer; ``0 if v < 0 else v`` fixes each
#: at no cost (see conv_gemm.pxd ``act_run``).


def positions(shape):
    """Corner, interior and last element of ``shape``."""
    first = (0,) * len(shape)
    middle = tuple(d // 2 for d in shape)
    last = tuple(d - 1 for d in shape)
    return [first, middle, last]


def special_inputs(x):
    """``{case: array}``: one special value at each chosen position, or one of each at once."""
    spots = positions(x.shape)
    cases = {}
    for name, value in SPECIALS.items():
        a = x.copy()
        for p in spots:
            a[p] = value
        cases[name] = a
    a = x.copy()
    for p, value in zip(spots, SPECIALS.values()):
        a[p] = value
    cases["mixed"] = a
    return cases


def assert_same_specials(ours, ref, what):
    assert ours.shape == ref.shape, what
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref), err_msg=f"{what}: NaN positions")
    np.testing.assert_array_equal(np.isposinf(ours), np.isposinf(ref), err_msg=f"{what}: +Inf positions")
    np.testing.assert_array_equal(np.isneginf(ours), np.isneginf(ref), err_msg=f"{what}: -Inf positions")
    finite = np.isfinite(ref)
    if finite.any():
        scale = float(np.abs(ref[finite]).max())
        # 1e-4 of each value, or of the largest where values are near 0 (deep models round so)
        np.testing.assert_allclose(ours[finite], ref[finite], rtol=1e-4, atol=1e-4 * scale, err_msg=what)


# -- single-op graphs ---------------------------------------------------------------------------
RNG = np.random.default_rng(20240613)
X_SHAPE = [1, 8, 10, 12]


def _init(name, shape, scale=0.3):
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def _model(nodes, inputs, inits=(), opset=17):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


ACTIVATIONS = {
    "Relu": ([], {}),
    "Clip": (["lo", "hi"], {}),
    "HardSwish": ([], {}),
    "Sigmoid": ([], {}),
    "LeakyRelu": ([], {"alpha": 0.1}),
}
CONVS = {
    "3x3": dict(w=[6, 8, 3, 3], attrs=dict(pads=[1, 1, 1, 1])),
    "1x1": dict(w=[6, 8, 1, 1], attrs={}),
    "depthwise": dict(w=[8, 1, 3, 3], attrs=dict(pads=[1, 1, 1, 1], group=8)),
}


def conv_model(kind, act):
    spec = CONVS[kind]
    extra, attrs = ACTIVATIONS[act]
    inits = [_init("w", spec["w"]), _init("b", [spec["w"][0]], 0.1)]
    if act == "Clip":
        inits += [numpy_helper.from_array(np.float32(0.0), "lo"), numpy_helper.from_array(np.float32(6.0), "hi")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], **spec["attrs"]),
             helper.make_node(act, ["c"] + extra, ["y"], **attrs)]
    return _model(nodes, [("x", X_SHAPE)], inits)


def op_models():
    ms = {}
    ms["MaxPool"] = _model([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                                             pads=[1, 1, 1, 1])], [("x", X_SHAPE)])
    ms["AveragePool"] = _model([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3],
                                                 pads=[1, 1, 1, 1])], [("x", X_SHAPE)])
    ms["GlobalAveragePool"] = _model([helper.make_node("GlobalAveragePool", ["x"], ["y"])], [("x", X_SHAPE)])
    ms["Add"] = _model([helper.make_node("Add", ["x", "z"], ["y"])], [("x", X_SHAPE)], [_init("z", X_SHAPE, 1.0)])
    ms["Gemm"] = _model([helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)], [("x", [3, 40])],
                        [_init("w", [16, 40]), _init("b", [16], 0.1)])
    ms["Softmax"] = _model([helper.make_node("Softmax", ["x"], ["y"], axis=1)], [("x", X_SHAPE)])
    ms["Softmax_last"] = _model([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], [("x", X_SHAPE)])
    ms["Concat"] = _model([helper.make_node("Concat", ["x", "z"], ["y"], axis=1)], [("x", X_SHAPE)],
                          [_init("z", [1, 3, 10, 12], 1.0)])
    ms["Relu"] = _model([helper.make_node("Relu", ["x"], ["y"])], [("x", X_SHAPE)])
    ms["LayerNormalization"] = _model([helper.make_node("LayerNormalization", ["x", "g", "h"], ["y"], axis=-1)],
                                      [("x", X_SHAPE)], [_init("g", X_SHAPE[-1:]), _init("h", X_SHAPE[-1:], 0.1)])
    ms["LeakyRelu"] = _model([helper.make_node("LeakyRelu", ["x"], ["y"], alpha=0.1)], [("x", X_SHAPE)])
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "s")
    for mode in ("nearest", "linear"):
        ms[f"Resize_{mode}"] = _model([helper.make_node("Resize", ["x", "", "s"], ["y"], mode=mode)],
                                      [("x", X_SHAPE)], [scales])
    return ms


def cases_for(model):
    """``[(layer, descriptor)]``: every routine that applies to each layer of ``model``."""
    graph = workbench.load(model.SerializeToString())
    return graph, [(layer.name, r.descriptor) for layer in graph for r in routines.applicable(graph, layer)]


def run_every_routine(model, nan_from_reference=False):
    """Each routine of each layer (the others at their default) against ONNX Runtime on every
    special input; returns ``{descriptor: failure}`` for the ones that failed.

    ``nan_from_reference``: where ONNX Runtime itself drops NaN (MaxPool: MLAS's running max
    keeps a NaN only when it comes first in its window), the NaN positions are the NumPy
    reference executor's, which must hold every NaN ONNX Runtime gives; infinities and finite
    values are still ONNX Runtime's."""
    graph, cases = cases_for(model)
    name = next(iter(graph.inputs))
    base = RNG.standard_normal(graph.inputs[name].shape).astype(np.float32)
    inputs = special_inputs(base)
    expected = {case: run_onnxruntime(model, {name: x})["y"] for case, x in inputs.items()}
    if nan_from_reference:
        for case, x in inputs.items():
            with np.errstate(all="ignore"):
                ref = workbench.ReferenceExecutor(graph).run({name: x})["y"]
            ort = expected[case]
            assert np.isnan(ref)[np.isnan(ort)].all()   # ORT's NaNs are a subset of the reference's
            assert np.array_equal(np.isinf(ref), np.isinf(ort))
            expected[case] = np.where(np.isnan(ref), np.float32(np.nan), ort)
    failed = {}
    for layer, descriptor in cases:
        choice = assign(graph)[0]
        choice[layer] = descriptor
        compiled = CompiledModel(graph, choice, num_threads=2)
        for case, x in inputs.items():
            with np.errstate(all="ignore"):
                ours = compiled.run({name: x})["y"]
            try:
                assert_same_specials(ours, expected[case], f"{layer} with {descriptor}, {case}")
            except AssertionError as e:
                failed.setdefault(descriptor, " ".join(line.strip() for line in str(e).splitlines() if line.strip())[:300])
    return failed


@pytest.mark.parametrize("act", list(ACTIVATIONS))
@pytest.mark.parametrize("kind", list(CONVS))
def test_conv_with_fused_activation_under_every_routine(kind, act):
    model = conv_model(kind, act)
    graph, cases = cases_for(model)
    assert len(graph) == 1 and graph.layer(cases[0][0]).attrs.get("activation")   # the activation is fused
    assert len(cases) >= 3
    assert run_every_routine(model) == {}


@pytest.mark.parametrize("act", ["Relu", "HardSwish", "Sigmoid"])
@pytest.mark.parametrize("k", [1, 3])
def test_shortcut_after_the_activation_under_every_routine(k, act):
    """``x + act(conv(x))``, fused as one Conv with its residual after the activation: the
    specials reach the output through the residual as through the product (Winograd's exact path
    included)."""
    c = X_SHAPE[1]
    inits = [_init("w", [c, c, k, k]), _init("b", [c], 0.1)]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[k // 2] * 4),
             helper.make_node(act, ["c"], ["a"]), helper.make_node("Add", ["a", "x"], ["y"])]
    model = _model(nodes, [("x", X_SHAPE)], inits)
    graph, cases = cases_for(model)
    assert len(graph) == 1 and graph.layer(cases[0][0]).attrs.get("residual_after_activation")
    assert len(cases) >= 3
    assert run_every_routine(model) == {}


#: Failing today in routines of other owners (see the module docstring).
OP_XFAIL = {
    "Resize_linear": "Resize linear (routines/tensor_ops.py bilinear and the NumPy reference): w0*a + w1*b "
                     "with a zero weight on an infinite input gives 0*inf = NaN where ONNX Runtime gives "
                     "the other tap's value or the infinity",
}
#: Ops where ONNX Runtime drops NaN and the NumPy reference's NaN positions are the oracle.
NAN_FROM_REFERENCE = {"MaxPool"}


@pytest.mark.parametrize("op", [pytest.param(op, marks=pytest.mark.xfail(strict=True, reason=OP_XFAIL[op]))
                                if op in OP_XFAIL else op for op in op_models()])
def test_single_op_under_every_routine(op):
    assert run_every_routine(op_models()[op], nan_from_reference=op in NAN_FROM_REFERENCE) == {}


# -- zoo models ---------------------------------------------------------------------------------
ZOO = {"tiny": 32, "mobilenet_v2": 32, "mobilenet_v3_large": 32, "resnet50": 32, "vgg16": 32}


def zoo_inputs(model):
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
    cases = {}
    for name, value in SPECIALS.items():
        a = x.copy()
        a[0, min(1, shape[1] - 1), shape[2] // 3, shape[3] // 2] = value
        cases[name] = a
    return cases


def check_plans(model, graph, plans):
    cases = zoo_inputs(model)
    expected = {c: run_onnxruntime(model, {"input": x})["logits"] for c, x in cases.items()}
    for label, choice in plans.items():
        compiled = CompiledModel(graph, choice, num_threads=2)
        for c, x in cases.items():
            with np.errstate(all="ignore"):
                ours = compiled.run({"input": x})["logits"]
            assert_same_specials(ours, expected[c], f"{label}, {c}")
        # Whatever the special values reach, a clean input still computes the model.
        clean = np.nan_to_num(cases["nan"], nan=0.0)
        assert_same_specials(compiled.run({"input": clean})["logits"],
                             run_onnxruntime(model, {"input": clean})["logits"], f"{label}, clean")


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return tmp_path_factory.mktemp("profiles") / "p.sqlite"


@pytest.mark.parametrize("name", ["tiny", "mobilenet_v2"])
def test_zoo_tuned_plan_and_every_family(name, db):
    model = zoo.build(name, resolution=ZOO[name])
    s = Session.from_onnx(model, num_threads=2, db=db)
    s.profile(repeats=2)
    s.tune()
    families = s.family_plans()
    assert len(families) >= 10
    check_plans(model, s.graph, {"tuned": s.plan.choice, **{f: p.choice for f, p in families.items()}})


@pytest.mark.parametrize("family", ["cpu:float32:nchw/*", "cpu:float32:nhwc/*", "cpu:float32:nchw/winograd4",
                                    "cpu:float32:nhwc/winograd2_avx512"])
@pytest.mark.parametrize("name", ["mobilenet_v3_large", "resnet50"])
def test_zoo_families(name, family):
    model = zoo.build(name, resolution=ZOO[name])
    graph = workbench.load(model.SerializeToString())
    check_plans(model, graph, {family: assign(graph, [family])[0]})


def test_vgg16_classifier_gemm_relu():
    """VGG-16's classifier is Gemm+Relu (cpu:float32:nchw/blas in every family)."""
    model = zoo.build("vgg16", resolution=ZOO["vgg16"])
    graph = workbench.load(model.SerializeToString())
    check_plans(model, graph, {"cpu:float32:nhwc/*": assign(graph, ["cpu:float32:nhwc/*"])[0]})


def test_winograd_takes_the_exact_path_only_for_non_finite_inputs():
    """Winograd spreads a NaN or an infinity over whole tiles (inf - inf is NaN); on such an
    input the routine runs im2col instead, and on a finite one it stays Winograd."""
    from workbench.runtime.cpu import kernel_module
    from workbench.routines.conv_winograd import Winograd4NHWC
    model = conv_model("3x3", "Relu")
    graph = workbench.load(model.SerializeToString())
    layer = next(iter(graph))
    x = RNG.standard_normal(X_SHAPE).astype(np.float32).transpose(0, 2, 3, 1).copy()
    out = np.empty((1, 10, 12, 6), np.float32)
    state = Winograd4NHWC.prepare(layer)
    Winograd4NHWC.run(layer, state, [x, *[layer.consts.get(i) for i in (1, 2)]], [out], 2)
    assert state.get("exact") is None
    x[0, 4, 5, 3] = np.inf
    Winograd4NHWC.run(layer, state, [x, *[layer.consts.get(i) for i in (1, 2)]], [out], 2)
    assert state.get("exact") is not None
    assert np.isinf(out).sum() + np.isnan(out).sum() <= 9 * 6   # only the 3x3 windows around it
    k = kernel_module("layout")
    for value in SPECIALS.values():
        for spot in positions(x.shape):
            y = np.zeros_like(x)
            y[spot] = value
            assert not k.all_finite(y)
    big = np.full((3, 5), np.finfo(np.float32).max, np.float32)
    big[1, 1] = -np.finfo(np.float32).tiny / 2   # a subnormal
    assert k.all_finite(big) and k.all_finite(np.zeros(0, np.float32))
    with pytest.raises(TypeError):
        k.all_finite(np.zeros(4, np.float64))
