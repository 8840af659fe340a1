"""The caller's CPU during a run (workbench/runtime/pinning.py): pinned to the pool's caller CPU while
several threads work, restored afterwards (also after an error), untouched for one thread."""
import os

import numpy as np
import pytest
from onnx import helper

import workbench
from workbench.runtime import pinning
from workbench._kernels import _pool
from workbench.runtime.compiled import CompiledModel

from .onnx_helpers import make_model


def test_pinned_while_threads_work_and_restored_after():
    before = os.sched_getaffinity(0)
    cpu = _pool.caller_cpu()
    with pinning.caller_pinned(2):
        inside = os.sched_getaffinity(0)
    assert os.sched_getaffinity(0) == before
    if cpu < 0:   # one CPU (or WB_POOL_PIN=0): nothing to pin
        assert inside == before
    else:
        assert inside == {cpu} and cpu in before


def test_one_thread_is_left_where_it_is():
    before = os.sched_getaffinity(0)
    with pinning.caller_pinned(1):
        assert os.sched_getaffinity(0) == before


def test_restored_after_an_error():
    before = os.sched_getaffinity(0)
    with pytest.raises(RuntimeError):
        with pinning.caller_pinned(2):
            raise RuntimeError("inside a run")
    assert os.sched_getaffinity(0) == before


def test_a_run_leaves_the_callers_cpus_as_they_were():
    w = np.random.default_rng(0).standard_normal((8, 4, 3, 3)).astype(np.float32)
    model = make_model([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
                       [("x", [1, 4, 16, 16])], [("y", None)], [("w", w)])
    graph = workbench.load(model.SerializeToString())
    cm = CompiledModel(graph, {L.name: "cpu:float32:nchw/reference" for L in graph}, num_threads=2)
    before = os.sched_getaffinity(0)
    x = np.random.default_rng(1).standard_normal((1, 4, 16, 16)).astype(np.float32)
    out = cm.run({"x": x})["y"]
    cm.run_timed({"x": x})
    assert os.sched_getaffinity(0) == before
    np.testing.assert_array_equal(out, workbench.ReferenceExecutor(graph).run({"x": x})["y"])


def _task_affinities():
    out = []
    for tid in os.listdir("/proc/self/task"):
        try:
            out.append(os.sched_getaffinity(int(tid)))
        except OSError:   # the thread ended meanwhile
            pass
    return out


def test_a_contended_caller_moves_and_its_worker_follows():
    """Runs whose caller waited for its CPU over a tenth of their time move the caller to the
    other CPU, and worker 1 takes the caller's old one at its next job; quiet runs move nothing."""
    first = _pool.caller_cpu()
    if first < 0:   # fewer than 2 CPUs, or WB_POOL_PIN=0: nothing is pinned, nothing moves
        _pool.caller_report(60_000_000, 0)
        assert _pool.caller_cpu() == -1
        return
    # A second of runs on the CPU closes whatever window earlier runs here left open (they may have
    # waited for a CPU the tests beside take) below the share, so nothing moves
    _pool.caller_report(1_000_000_000, 1_000_000_000)
    first = _pool.caller_cpu()
    for _ in range(10):   # 100 ms of runs, all of them on the CPU: no move
        _pool.caller_report(10_000_000, 10_000_000)
    assert _pool.caller_cpu() == first
    _pool.caller_report(60_000_000, 30_000_000)   # half the window waiting for the CPU
    moved = _pool.caller_cpu()
    assert moved != first and moved in os.sched_getaffinity(0)
    assert _pool.worker_cpu(1) != moved
    if len(os.sched_getaffinity(0)) == 2:
        assert _pool.worker_cpu(1) == first
    slots, runs = _pool.probe(64, 2, 20000)   # a job: the worker re-pins before taking chunks
    assert (runs == 1).all()
    if (slots == 1).any():
        assert {_pool.worker_cpu(1)} in _task_affinities()
    _pool.caller_report(60_000_000, 30_000_000)   # contended again: it moves on (back, on 2 CPUs)
    assert _pool.caller_cpu() != moved
