"""The NumPy-ufunc routines (long-tail ops) against the reference, inside the compiled executor."""
import numpy as np
import pytest
from onnx import TensorProto, helper

import workbench
from onnx_helpers import make_model
from routine_helpers import assert_routine_matches

UFUNC = "cpu:float32:nchw/ufunc"
F = TensorProto.FLOAT
X = ("x", [2, 3, 5, 7])


def case(op, inputs=(X,), inits=(), outputs=(("y", None, F),), opset=17, **attrs):
    names = [i[0] for i in inputs] + [n for n, _ in inits]
    node = helper.make_node(op, names, [o[0] for o in outputs], name="layer", **attrs)
    return make_model([node], list(inputs), list(outputs), list(inits), opset=opset)


CASES = {
    **{op: case(op) for op in ("Abs", "Ceil", "Cos", "Floor", "Neg", "Round", "Sign", "Sin", "Softplus", "Softsign",
                               "Mish")},
    "Log": case("Log", inits=()),
    "Elu": case("Elu", alpha=0.7), "Selu": case("Selu"),   # GELU: eltwise's direct routine
    "Max": case("Max", inputs=(X, ("z", [3, 1, 7]))), "Min": case("Min", inputs=(X, ("z", [1, 5, 1]))),
    "Sum3": case("Sum", inputs=(X, ("z", [7]), ("w", [2, 3, 5, 7]))), "Mean": case("Mean", inputs=(X, ("z", [5, 7]))),
    "Equal": case("Equal", inputs=(X, ("z", [3, 1, 1])), outputs=(("y", None, TensorProto.BOOL),)),
    "Less": case("Less", inputs=(X, ("z", [7])), outputs=(("y", None, TensorProto.BOOL),)),
    "GreaterOrEqual": case("GreaterOrEqual", inputs=(X, ("z", [7])), outputs=(("y", None, TensorProto.BOOL),)),
    "Where": case("Where", inputs=(("c", [5, 7], TensorProto.BOOL), X, ("z", [7]))),
    "Mod": case("Mod", inputs=(X,), inits=(("d", np.array([1.5, -2.0, 3.0, 0.7, 2.2, -1.1, 4.0], np.float32)),),
                fmod=1),
    "ReduceMean": case("ReduceMean", inits=(("axes", np.array([1, 3], np.int64)),), opset=18),
    "ReduceSum": case("ReduceSum", inits=(("axes", np.array([-1], np.int64)),), keepdims=0),
    "ReduceMax": case("ReduceMax", axes=[2], opset=13), "ReduceL2": case("ReduceL2", axes=[1, 2], opset=13),
    "ReduceSumSquare": case("ReduceSumSquare", opset=13, keepdims=0),
    "ArgMax": case("ArgMax", axis=2, keepdims=0, outputs=(("y", None, TensorProto.INT64),)),
    "ArgMin": case("ArgMin", axis=-1, outputs=(("y", None, TensorProto.INT64),)),
    "Gather": case("Gather", inits=(("i", np.array([[4, -1], [0, 2]], np.int64)),), axis=3),
    "Expand": case("Expand", inputs=(("x", [3, 1, 7]),), inits=(("s", np.array([2, 3, 5, 7], np.int64)),)),
    "Tile": case("Tile", inits=(("r", np.array([1, 2, 1, 3], np.int64)),)),
    "DepthToSpace": case("DepthToSpace", inputs=(("x", [2, 8, 3, 5]),), blocksize=2, mode="CRD"),
    "DepthToSpaceDCR": case("DepthToSpace", inputs=(("x", [2, 8, 3, 5]),), blocksize=2),
    "SpaceToDepth": case("SpaceToDepth", inputs=(("x", [2, 3, 4, 6]),), blocksize=2),
    "InstanceNormalization": case("InstanceNormalization", inits=(("s", np.linspace(0.5, 2, 3, dtype=np.float32)),
                                                                  ("b", np.array([0.1, -0.2, 0.3], np.float32)))),
    "LayerNormalization": case("LayerNormalization", inits=(("s", np.linspace(0.5, 2, 35, dtype=np.float32).reshape(5, 7)),
                                                            ("b", np.full((5, 7), 0.25, np.float32))), axis=-2),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_ufunc_routine_matches_reference(name):
    graph = workbench.load(CASES[name].SerializeToString(), fuse=False)
    feeds = workbench.random_inputs(graph, seed=11)
    if name == "Log":
        feeds["x"] = np.abs(feeds["x"]) + 0.1
    assert_routine_matches(graph, UFUNC, expect_layers=["layer"], feeds=feeds)


def test_unfused_batchnorm_is_served(rng):
    # Without the fusion passes BatchNormalization stays a layer; the ufunc routine runs it.
    c = 3
    inits = [("s", rng.uniform(0.5, 1.5, c).astype(np.float32)), ("b", rng.normal(size=c).astype(np.float32)),
             ("m", rng.normal(size=c).astype(np.float32)), ("v", rng.uniform(0.5, 2, c).astype(np.float32))]
    model = case("BatchNormalization", inits=inits)
    graph = workbench.load(model.SerializeToString(), fuse=False)
    assert_routine_matches(graph, UFUNC, expect_layers=["layer"])
