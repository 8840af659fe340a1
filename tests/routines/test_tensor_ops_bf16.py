"""bfloat16 data movement (``cpu:bfloat16:{nchw,nhwc}/copy``, ``nchw/view``, ``nhwc/gather``)
against the NumPy reference: the values are the inputs rounded to bfloat16, moved exactly."""
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from onnx import helper

import workbench
from onnx_helpers import make_model
from routine_helpers import run_with_routine
from workbench import routines
from workbench.runtime import cpu

NATIVE = cpu.kernel_module("gemm_bf16", "avx512bf16")
pytestmark = pytest.mark.skipif(NATIVE is None or not NATIVE.available, reason="this CPU lacks AVX512-BF16")
SETTINGS = dict(deadline=None, derandomize=True, database=None)


def _graph(nodes, inputs, outputs=("y",), inits=()):
    model = make_model(nodes, inputs, [(o, None) for o in outputs], initializers=inits)
    return workbench.load(model.SerializeToString())


def assert_moved_exactly(graph, descriptor, feeds, threads=2):
    """Moves are exact: ours equals the reference run on the inputs rounded to bfloat16."""
    rounded = {k: v.astype(ml_dtypes.bfloat16).astype(np.float32) for k, v in feeds.items()}
    ours, ref, used = run_with_routine(graph, descriptor, feeds=rounded, num_threads=threads)
    assert used, descriptor
    for name, r in ref.items():
        np.testing.assert_array_equal(ours[name], r.astype(np.float32))
    return used


@settings(max_examples=25, **SETTINGS)
@given(layout=st.sampled_from(["nchw", "nhwc"]), split=st.booleans(), widths=st.lists(st.integers(1, 9), min_size=1, max_size=4),
       h=st.integers(1, 7), w=st.integers(1, 7), threads=st.integers(1, 3), seed=st.integers(0, 2 ** 16))
def test_concat_and_split(layout, split, widths, h, w, threads, seed):
    rng = np.random.default_rng(seed)
    names = [f"p{i}" for i in range(len(widths))]
    if split:
        graph = _graph([helper.make_node("Split", ["x", "s"], names, axis=1)], [("x", [1, sum(widths), h, w])], names,
                       [("s", np.array(widths, np.int64))])
        feeds = {"x": rng.standard_normal((1, sum(widths), h, w)).astype(np.float32)}
    else:
        graph = _graph([helper.make_node("Concat", names, ["y"], axis=1)], [(n, [1, c, h, w]) for n, c in zip(names, widths)])
        feeds = {n: rng.standard_normal((1, c, h, w)).astype(np.float32) for n, c in zip(names, widths)}
    assert_moved_exactly(graph, f"cpu:bfloat16:{layout}/copy", feeds, threads)


def test_flatten_is_a_view():
    graph = _graph([helper.make_node("Flatten", ["x"], ["y"])], [("x", [2, 6, 3, 3])])
    assert_moved_exactly(graph, "cpu:bfloat16:nchw/view", {"x": np.random.default_rng(0).standard_normal((2, 6, 3, 3)).astype(np.float32)})


@settings(max_examples=25, **SETTINGS)
@given(op=st.sampled_from(["Resize", "Pad", "Slice"]), c=st.integers(1, 12).map(lambda k: 2 * k), h=st.integers(2, 9),
       w=st.integers(2, 9), a=st.integers(0, 3), b=st.integers(0, 3), threads=st.integers(1, 3), seed=st.integers(0, 2 ** 16))
def test_gathers(op, c, h, w, a, b, threads, seed):
    rng = np.random.default_rng(seed)
    inits = []
    if op == "Resize":
        node = helper.make_node("Resize", ["x", "", "s"], ["y"], mode="nearest")
        inits = [("s", np.array([1, 1, a + 1, b + 1], np.float32))]
    elif op == "Pad":
        node = helper.make_node("Pad", ["x", "p", "v"], ["y"])
        inits = [("p", np.array([0, 0, a, b, 0, 0, b, a], np.int64)), ("v", np.array(-2.5, np.float32))]
    else:
        node = helper.make_node("Slice", ["x", "st", "en", "ax"], ["y"])
        inits = [("st", np.array([min(a, h - 1), min(b, w - 1)], np.int64)), ("en", np.array([h, w], np.int64)),
                 ("ax", np.array([2, 3], np.int64))]
    graph = _graph([node], [("x", [1, c, h, w])], inits=inits)
    assert_moved_exactly(graph, "cpu:bfloat16:nhwc/gather", {"x": rng.standard_normal((1, c, h, w)).astype(np.float32)}, threads)


def test_the_gather_takes_only_whole_even_pixels():
    odd = _graph([helper.make_node("Resize", ["x", "", "s"], ["y"], mode="nearest")], [("x", [1, 5, 4, 4])],
                 inits=[("s", np.array([1, 1, 2, 2], np.float32))])
    channels = _graph([helper.make_node("Pad", ["x", "p"], ["y"])], [("x", [1, 6, 4, 4])],
                      inits=[("p", np.array([0, 1, 0, 0, 0, 1, 0, 0], np.int64))])
    for graph in (odd, channels):
        layer = next(iter(graph))
        assert not routines.get(layer.op, "cpu:bfloat16:nhwc/gather").applies(layer, graph.input_specs(layer))
