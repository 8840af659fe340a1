"""The bfloat16 Winograd routines (``cpu:bfloat16:nhwc/winograd2_bf16`` and its float32-in/out
forms) in whole graphs against the NumPy reference, within the bfloat16 tolerance
(``tuning.precision.tolerance``); what they refuse; NaN and infinity as the reference has them
(such inputs run on im2col_bf16)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from routine_helpers import assert_routine_matches, conv_graph, run_with_routine
from workbench import routines
from workbench.routines.conv_bf16 import WINOGRAD_ERROR
from workbench.runtime import cpu

NATIVE = cpu.kernel_module("winograd_bf16", "avx512bf16")
pytestmark = pytest.mark.skipif(NATIVE is None or not NATIVE.available, reason="this CPU lacks AVX512-BF16")
WINOGRAD = sorted(d for d in routines.routines_for("Conv") if "/winograd2_bf16" in d)


def test_every_form_is_registered():
    assert [d.rsplit("/", 1)[1] for d in WINOGRAD] == [
        "winograd2_bf16", "winograd2_bf16_f32in", "winograd2_bf16_f32io", "winograd2_bf16_f32out"]


@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(descriptor=st.sampled_from(WINOGRAD), c=st.integers(16, 40), m=st.integers(8, 40), h=st.integers(5, 12),
       w=st.integers(5, 12), pads=st.tuples(*[st.integers(0, 2)] * 4), bias=st.booleans(), residual=st.booleans(),
       activation=st.sampled_from([None, "Relu", "Clip", "LeakyRelu", "HardSwish"]), threads=st.integers(1, 3),
       seed=st.integers(0, 2 ** 16))
def test_matches_reference(descriptor, c, m, h, w, pads, bias, residual, activation, threads, seed):
    # The tolerance is relative to an output's peak, which a handful of outputs (after a Relu,
    # perhaps one small one) does not represent: tiny and odd shapes are the kernel test's, whose
    # bound is elementwise (tests/kernels/test_winograd_bf16.py).
    rng = np.random.default_rng(seed)
    # weights scaled as trained layers' are (outputs of about unit size): with N(0,1) weights a
    # saturating activation (Clip at 0.9) would compare an error of the ~12-sized pre-activation
    # values with a peak of 0.9
    wt = (rng.standard_normal((m, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32) if bias else None
    graph = conv_graph([1, c, h, w], wt, b, dict(pads=list(pads)), activation, residual)
    assert_routine_matches(graph, descriptor, expect_layers=["conv"], num_threads=threads, seed=seed)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_error_is_what_the_module_states(seed):
    """max |ours - ref| / max |ref| on a ResNet-like 3x3 layer: under WINOGRAD_ERROR, and under
    twice im2col_bf16's on the same layer."""
    rng = np.random.default_rng(seed)
    graph = conv_graph([1, 64, 28, 28], rng.standard_normal((64, 64, 3, 3)).astype(np.float32) / 24,
                       attrs=dict(pads=[1, 1, 1, 1]))
    errs = []
    for descriptor in (WINOGRAD[0], "cpu:bfloat16:nhwc/im2col_bf16"):
        ours, ref, used = run_with_routine(graph, descriptor, seed=seed)
        assert used == ["conv"]
        (name, r), = ref.items()
        errs.append(float(np.abs(ours[name].astype(np.float64) - r).max() / np.abs(r).max()))
    assert 1e-4 < errs[0] < WINOGRAD_ERROR and errs[0] < 2 * errs[1], errs   # bfloat16, within the stated error


@pytest.mark.parametrize("attrs, shape", [(dict(strides=[2, 2]), [1, 16, 9, 9]), (dict(dilations=[2, 2]), [1, 16, 9, 9]),
                                          (dict(group=2), [1, 32, 9, 9]), ({}, [1, 8, 9, 9])])
def test_refuses_what_it_cannot_run(attrs, shape):
    rng = np.random.default_rng(0)
    wt = rng.standard_normal((16, shape[1] // attrs.get("group", 1), 3, 3)).astype(np.float32)
    graph = conv_graph(shape, wt, attrs=attrs)
    layer = next(iter(graph))
    assert not any(routines.get("Conv", d).applies(layer, graph.input_specs(layer)) for d in WINOGRAD)


@pytest.mark.parametrize("descriptor", WINOGRAD)
def test_nan_and_inf_stay_in_their_windows(descriptor):
    rng = np.random.default_rng(1)
    graph = conv_graph([1, 16, 10, 10], rng.standard_normal((8, 16, 3, 3)).astype(np.float32), attrs=dict(pads=[1] * 4))
    x = rng.standard_normal((1, 16, 10, 10)).astype(np.float32)
    x[0, 3, 2, 2], x[0, 5, 7, 6] = np.nan, np.inf
    ours, ref, used = run_with_routine(graph, descriptor, feeds={"x": x})
    assert used == ["conv"]
    (name, r), = ref.items()
    got = ours[name].astype(np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(r))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(r))
    finite = np.isfinite(r)
    assert np.abs(got[finite] - r[finite]).max() / np.abs(r[finite]).max() < WINOGRAD_ERROR
