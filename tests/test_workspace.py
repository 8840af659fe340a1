"""Routines' declared workspaces: one buffer in the executor's arena that the memory planner
sizes for the largest, handed over through the prepared state; kernels refuse one too small."""
import numpy as np
import pytest
from onnx import helper

import workbench
from workbench import routines
from workbench.ir.graph import NCHW
from workbench.runtime import cpu
from workbench.runtime.compiled import WORKSPACE, CompiledModel
from onnx_helpers import make_model

REFERENCE = "cpu:float32:nchw/reference"


@pytest.fixture
def scratch_relu():
    """A test-only Relu routine that declares a workspace of its input's bytes plus one and
    computes through it; the workspaces it was given are recorded in ``seen``."""
    seen = []

    class TestReluScratch(routines.Routine):
        op, layout, algo = "Relu", NCHW, "testscratch"

        @classmethod
        def applies(cls, layer, specs):
            return specs[0].dtype == "float32"

        @classmethod
        def prepare(cls, layer):
            return {}

        @classmethod
        def workspace(cls, layer, specs, num_threads):
            return 4 * int(np.prod(specs[0].shape)) + 1

        @classmethod
        def run(cls, layer, state, args, outs, num_threads):
            ws = state["workspace"]
            seen.append(ws)
            tmp = ws[:args[0].nbytes].view(np.float32).reshape(args[0].shape)
            np.copyto(tmp, args[0])
            np.maximum(tmp, 0, out=outs[0])

    yield TestReluScratch.descriptor, seen
    del routines._REGISTRY["Relu"][TestReluScratch.descriptor]


def _chain(n=4):
    """x -> (Relu, Add 1) x n: each Relu's input dies at its step."""
    nodes, prev = [], "x"
    for i in range(n):
        nodes.append(helper.make_node("Relu", [prev], [f"r{i}"], name=f"relu{i}"))
        nodes.append(helper.make_node("Add", [f"r{i}", "one"], [f"a{i}"], name=f"add{i}"))
        prev = f"a{i}"
    model = make_model(nodes, [("x", [1, 8, 16, 16])], [(prev, None)], [("one", np.ones(1, np.float32) * -0.5)])
    return workbench.load(model.SerializeToString(), fuse=False)


def test_workspaces_share_one_planned_buffer_in_the_arena(scratch_relu):
    """Steps run one at a time: every layer's workspace is the start of one buffer the size of
    the largest, in the executor's arena, in a slot after the tensors' (which keep the slots a
    plan without workspaces gives them)."""
    descriptor, seen = scratch_relu
    graph = _chain()
    assignment = {l.name: descriptor if l.op == "Relu" else REFERENCE for l in graph}
    cm = CompiledModel(graph, assignment, num_threads=2)
    feeds = workbench.random_inputs(graph, seed=1)
    out = cm.run(feeds)
    ref = workbench.ReferenceExecutor(graph).run(feeds)
    for name in ref:
        np.testing.assert_array_equal(out[name], ref[name])
    relus = [l.name for l in graph if l.op == "Relu"]
    need = 4 * 8 * 16 * 16 + 1
    assert cm.workspaces == {name: need for name in relus} and len(seen) == len(relus)
    arena = cm._arenas[0]
    assert all(ws.dtype == np.uint8 and ws.nbytes == need and ws.ctypes.data % 64 == 0 for ws in seen)
    assert len({ws.ctypes.data for ws in seen}) == 1 and np.shares_memory(seen[0], arena)
    v = cm.memory.values[WORKSPACE]
    assert v.slot == len(cm.memory.slot_sizes) - 1 and cm.memory.slot_sizes[v.slot] == need
    plain = CompiledModel(graph, {l.name: REFERENCE for l in graph}, num_threads=2)
    assert {k: x.slot for k, x in cm.memory.values.items() if k != WORKSPACE} == \
        {k: x.slot for k, x in plain.memory.values.items()}


def test_each_executor_gets_its_own_workspace(scratch_relu):
    descriptor, seen = scratch_relu
    graph = _chain(1)
    assignment = {l.name: descriptor if l.op == "Relu" else REFERENCE for l in graph}
    cm = CompiledModel(graph, assignment, num_threads=1, max_concurrency=2)
    first = cm._idle[0]
    second = cm._new_executor()
    feeds = workbench.random_inputs(graph, seed=2)
    for ex in (first, second):
        cm._load(ex, cm._inputs(feeds))
        for step in ex.steps:
            step.run()
    assert len(seen) == 2 and not np.shares_memory(seen[0], seen[1])


def test_prepared_refuses_a_workspace_too_small(scratch_relu):
    descriptor, _ = scratch_relu
    graph = _chain(1)
    layer = next(l for l in graph if l.op == "Relu")
    r = routines.get("Relu", descriptor)
    with pytest.raises(ValueError, match="workspace of 10 bytes"):
        routines.prepared(r, layer, graph.input_specs(layer), 1, np.empty(10, np.uint8))
    state = routines.prepared(r, layer, graph.input_specs(layer), 1)   # the profiler's: a new one
    assert state["workspace"].nbytes == 4 * 8 * 16 * 16 + 1 and state["workspace"].ctypes.data % 64 == 0


def _conv_graph(c=16, m=24, hw=12, k=3):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((m, c, k, k)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[k // 2] * 4)
    model = make_model([node], [("x", [1, c, hw, hw])], [("y", None)], [("w", w)])
    return workbench.load(model.SerializeToString())


@pytest.mark.parametrize("descriptor, k", [
    ("cpu:float32:nchw/im2col", 3), ("cpu:float32:nhwc/im2col", 3), ("cpu:float32:nhwc/im2col_avx512", 3),
    ("cpu:float32:nhwc/implicit_avx512", 3), ("cpu:float32:nchw/winograd2", 3),
    ("cpu:float32:nhwc/winograd4_avx512", 3), ("cpu:float32:nchw/gemm1x1_avx512", 1),
    ("cpu:float32:nhwc/gemm1x1_avx512", 1), ("cpu:bfloat16:nhwc/im2col_bf16", 3),
    ("cpu:bfloat16:nhwc/implicit_bf16_f32in", 3), ("cpu:bfloat16:nhwc/gemm1x1_bf16_f32in", 1)])
def test_conv_workspaces_are_declared_and_suffice(descriptor, k):
    """Each conv family's declared workspace, for 1 to 3 threads, is what its kernels take: the
    model runs on it at every thread count up to the one it was compiled for (the kernels check
    its size before any nogil code), with the same outputs up to the summation order of the
    thread count's schedule."""
    graph = _conv_graph(k=k)
    conv = graph.layer("conv")
    table = routines.routines_for("Conv")
    r = table.get(descriptor)
    if r is None or not r.available() or not r.applies(conv, graph.input_specs(conv)):
        pytest.skip(f"{descriptor} is not built for this CPU")
    assert r.workspace(conv, graph.input_specs(conv), 3) > 0
    feeds = workbench.random_inputs(graph, seed=3)
    cm = CompiledModel(graph, {"conv": descriptor}, num_threads=3, adaptive_threads=False)
    assert "conv" in cm.workspaces
    want = cm.run(feeds)["y"]
    for threads in (1, 2, 3):
        ex = cm._idle[0]
        ex.threads = threads
        cm._load(ex, cm._inputs(feeds))
        for step in ex.steps:
            step.run()
        np.testing.assert_allclose(cm._outputs(ex)["y"], want, rtol=0, atol=1e-5 * float(np.abs(want).max()))


def test_kernels_refuse_a_scratch_too_small():
    g, k = cpu.kernel_module("gemm512", "avx512"), cpu.kernel_module("conv_im2col512", "avx512")
    if g is None or k is None:
        pytest.skip("no AVX-512 build of gemm512 on this CPU")
    x = np.ones((1, 6, 6, 8), np.float32)
    w = g.pack_b(np.ones((9 * 8, 4), np.float32))
    out = np.empty((1, 6, 6, 4), np.float32)
    need = k.conv_im2col_scratch_bytes(True, 72, 4, 1, 36, False, 2)
    with pytest.raises(ValueError, match=f"at least {need} bytes"):
        k.conv_im2col(True, x, w, None, None, out, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), num_threads=2,
                      scratch=np.empty(need - 4, np.uint8))
    k.conv_im2col(True, x, w, None, None, out, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), num_threads=2,
                  scratch=np.empty(need, np.uint8))
    assert np.allclose(out[0, 1:-1, 1:-1], 72) and np.allclose(out[0, 0, 0], 32)


def test_pool_rows_come_from_the_scratch_given():
    """A separable pool's scratch rows: the size it declares suffices, one byte less is refused."""
    pool = cpu.kernel_module("pool")
    plan = pool.Pool2d((13, 11), (13, 11), (5, 5), (1, 1), (1, 1), (2, 2, 2, 2), True)
    x = np.random.default_rng(4).standard_normal((2, 3, 13, 11)).astype(np.float32)
    need = plan.scratch_bytes(2, 3, False, 1)
    assert need > 0
    y = np.empty_like(x)
    plan.nchw(x, y, 1, np.empty(need, np.uint8))
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)), constant_values=-np.inf)
    want = np.lib.stride_tricks.sliding_window_view(padded, (5, 5), axis=(2, 3)).max(axis=(-2, -1))
    np.testing.assert_array_equal(y, want)
    with pytest.raises(ValueError, match=f"Pool2d: scratch must be .* at least {need} bytes"):
        plan.nchw(x, y, 1, np.empty(need - 1, np.uint8))
