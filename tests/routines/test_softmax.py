"""Softmax/LogSoftmax routines (every axis, both layouts, every ISA build) against the reference,
NaN/Inf against ONNX Runtime, and the polynomial exp against float64."""
import importlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from onnx import helper

import workbench
from onnx_helpers import make_model
from routine_helpers import assert_routine_matches, parallel_even_when_small, run_with_routine
from workbench.runtime import cpu
from workbench import routines
from workbench.onnx_io.ort import run_onnxruntime

SETTINGS = settings(deadline=None, derandomize=True, max_examples=40)
ISAS = [isa for isa in (None, "avx2", "avx512") if isa is None or cpu.supports(isa)]
VARIANTS = [f"cpu:float32:{lay}/direct{'_' + isa if isa else ''}" for lay in ("nchw", "nhwc") for isa in ISAS]


@pytest.fixture(autouse=True, scope="module")
def _parallel_even_when_small():
    with parallel_even_when_small("softmax"):
        yield


def _model(op, shape, axis, opset):
    return make_model([helper.make_node(op, ["x"], ["y"], axis=axis)], [("x", list(shape))], [("y", None)],
                      opset=opset)


def _expected_applies(shape, axis, opset, layout):
    if layout == "nchw":
        return True
    return len(shape) == 4 and (opset >= 13 or axis % 4 in (0, 1))


@SETTINGS
@given(st.lists(st.integers(1, 9), min_size=1, max_size=4), st.data(), st.sampled_from([11, 13]),
       st.sampled_from(["Softmax", "LogSoftmax"]), st.sampled_from(VARIANTS))
def test_softmax_any_axis(shape, data, opset, op, descriptor):
    if data.draw(st.booleans()):
        shape[-1] = data.draw(st.integers(10, 300))   # long rows: the vector body and its tail
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    g = workbench.load(_model(op, shape, axis, opset).SerializeToString())
    layer = next(iter(g))
    applies = routines.get(op, descriptor).applies(layer, g.input_specs(layer))
    assert applies == _expected_applies(shape, axis, opset, descriptor.split(":")[2].split("/")[0])
    if applies:
        assert_routine_matches(g, descriptor, rtol=2e-6)


@pytest.mark.parametrize("descriptor", VARIANTS)
@pytest.mark.parametrize("axis", [1, 2, 3])
def test_large_logits_and_wide_lanes(descriptor, axis):
    # Logits far apart (exp underflows for most) and an inner axis wider than one lane block (256).
    g = workbench.load(_model("Softmax", [2, 5, 3, 300], axis, 13).SerializeToString())
    x = np.random.default_rng(axis).standard_normal((2, 5, 3, 300)).astype(np.float32) * 40
    assert_routine_matches(g, descriptor, rtol=2e-6, feeds={"x": x})


@pytest.mark.parametrize("descriptor", VARIANTS)
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis", [-1, 1])
def test_nan_and_inf_as_onnxruntime(descriptor, op, axis):
    model = _model(op, [2, 4, 3, 40], axis, 13)
    g = workbench.load(model.SerializeToString())
    x = np.random.default_rng(0).standard_normal((2, 4, 3, 40)).astype(np.float32)
    x[0, 1, 2, 7] = np.nan
    x[1, 2, 0, 3] = np.inf
    x[1, 3, 1, 5] = -np.inf
    ours, _, used = run_with_routine(g, descriptor, feeds={"x": x})
    assert used
    theirs = run_onnxruntime(model, {"x": x})["y"]
    np.testing.assert_array_equal(np.isnan(ours["y"]), np.isnan(theirs))
    assert np.isnan(theirs).any()
    finite = np.isfinite(theirs)
    np.testing.assert_array_equal(finite, np.isfinite(ours["y"]))
    np.testing.assert_allclose(ours["y"][finite], theirs[finite], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("isa", ISAS)
def test_polynomial_exp(isa):
    k = cpu.kernel_module("softmax", isa)
    x = np.concatenate([np.linspace(-87, 88, 20001, dtype=np.float32), np.float32([-90, -1e30, np.nan, 0])])
    out = np.empty_like(x)
    k.exp(x, out)
    ref = np.exp(x[:20001].astype(np.float64))
    assert np.max(np.abs(out[:20001] - ref) / ref) < 3e-7
    assert out[20001] == 0 and out[20002] == 0 and np.isnan(out[20003]) and out[20004] == 1


def test_kernel_checks_shapes():
    k = importlib.import_module("workbench._kernels.softmax")
    a = np.arange(12, dtype=np.float32)
    with pytest.raises(ValueError, match="elements"):
        k.softmax(a, np.empty(12, np.float32), 5, 3, 1)
    with pytest.raises(TypeError, match="float32"):
        k.softmax(a.astype(np.float64), np.empty(12, np.float32), 4, 3, 1)
    with pytest.raises(ValueError, match="contiguous"):
        k.softmax(np.arange(24, dtype=np.float32)[::2], np.empty(12, np.float32), 4, 3, 1)
    out = np.empty(12, np.float32)
    k.softmax_rows(a, out, 4, 3)
    np.testing.assert_allclose(out.reshape(4, 3).sum(1), 1, rtol=1e-6)
