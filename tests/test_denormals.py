"""Denormals flushed to zero while a model runs (workbench/runtime/denormals.py), in the calling thread
and in the pool's workers, and left alone outside a run."""
import numpy as np
import pytest
from onnx import helper

import workbench
from workbench import routines
from workbench._kernels import _pool
from workbench.runtime.compiled import CompiledModel
from workbench.runtime.denormals import flushed
from onnx_helpers import make_model

pytestmark = pytest.mark.skipif(not _pool.flush_available, reason="no MXCSR: nothing to flush (not x86)")
TINY = np.float32(5e-40)   # a denormal float32: 16 of them still sum to one


def test_flushed_sets_and_restores_the_callers_mode():
    x = np.full(4, TINY, np.float32)
    assert (x * np.float32(1)).min() == TINY
    with flushed():
        assert not (x * np.float32(1)).any()   # DAZ: a denormal operand reads as zero
        assert not (np.float32(1e-30) * np.full(4, 1e-10, np.float32)).any()   # FTZ: a denormal result is zero
        with flushed(False):
            assert (x * np.float32(1)).min() == TINY
        assert not (x * np.float32(1)).any()
    assert (x * np.float32(1)).min() == TINY


def _conv_model():
    # A 1x1 convolution large enough to be split over the pool's workers.
    w = np.ones((32, 16, 1, 1), np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv")
    return make_model([node], [("x", [1, 16, 64, 64])], [("y", [1, 32, 64, 64])], [("w", w)])


GRAPH = workbench.load(_conv_model().SerializeToString())


@pytest.mark.parametrize("descriptor", [r.descriptor for r in routines.applicable(GRAPH, GRAPH.layer("conv"))])
def test_every_thread_of_a_run_flushes(descriptor):
    graph = GRAPH
    x = np.full((1, 16, 64, 64), TINY, np.float32)
    x[..., ::7] = 0
    expected = np.einsum("chw->hw", x[0], dtype=np.float64).astype(np.float32)
    assert expected.max() > 0 and expected.max() < np.finfo(np.float32).tiny
    kept = CompiledModel(graph, {"conv": descriptor}, num_threads=2, flush_denormals=False).run({"x": x})["y"]
    np.testing.assert_allclose(kept[0], np.broadcast_to(expected, (32, 64, 64)), rtol=1e-5, atol=0)
    flush = CompiledModel(graph, {"conv": descriptor}, num_threads=2).run({"x": x})["y"]
    assert not flush.any(), f"{np.count_nonzero(flush)} of {flush.size} outputs kept a denormal"
    # Outside the run the caller's arithmetic keeps its denormals.
    assert (x * np.float32(1)).max() == TINY
