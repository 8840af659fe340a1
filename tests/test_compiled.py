"""The planned executor: same outputs as the reference, adapts where layouts differ, buffer reuse."""
import numpy as np
import pytest
from onnx import helper

import workbench
from workbench import routines, zoo
from workbench.runtime.compiled import CompiledModel
from workbench.errors import WorkbenchError
from workbench.ir.formats import Format
from workbench.ir.graph import NHWC
from onnx_helpers import make_model
from routine_helpers import bkey

REFERENCE = "cpu:float32:nchw/reference"


@pytest.fixture
def nhwc_relu():
    """A test-only NHWC Relu routine (NumPy), removed from the registry afterwards."""
    class TestReluNhwc(routines.Routine):
        op, layout, algo = "Relu", NHWC, "testonly"

        @classmethod
        def applies(cls, layer, specs):
            return len(specs[0].shape) == 4

        @classmethod
        def run(cls, layer, state, args, outs, num_threads):
            assert args[0].shape == outs[0].shape and args[0].shape[-1] == layer.out_specs[0].shape[1]
            np.maximum(args[0], 0, out=outs[0])

    yield TestReluNhwc.descriptor
    del routines._REGISTRY["Relu"][TestReluNhwc.descriptor]


def chain_graph(rng, n_relu=4, readers_of_first=1):
    nodes, prev = [], "x"
    for i in range(n_relu):
        nodes.append(helper.make_node("Relu", [prev], [f"r{i}"], name=f"relu{i}"))
        nodes.append(helper.make_node("Add", [f"r{i}", "bias"], [f"a{i}"], name=f"add{i}"))
        prev = f"a{i}"
    for j in range(readers_of_first - 1):
        nodes.append(helper.make_node("Relu", ["a0"], [f"extra{j}"], name=f"extra{j}"))
    outputs = [(prev, None)] + [(f"extra{j}", None) for j in range(readers_of_first - 1)]
    model = make_model(nodes, [("x", [2, 3, 5, 7])], outputs,
                       [("bias", rng.standard_normal((3, 1, 1)).astype(np.float32))])
    return workbench.load(model.SerializeToString(), fuse=False)


@pytest.mark.parametrize("name", ["tiny", "mobilenet_v3_large"])
def test_reference_assignment_matches_reference_executor(name):
    graph = workbench.load(zoo.build(name, resolution=64 if name != "tiny" else None))
    feeds = workbench.random_inputs(graph, seed=3)
    compiled = CompiledModel(graph, {l.name: REFERENCE for l in graph}, num_threads=2)
    ours = compiled.run(feeds)
    ref = workbench.ReferenceExecutor(graph).run(feeds)
    # The same NumPy code, only BLAS threading differs (the executor runs BLAS single-threaded).
    np.testing.assert_allclose(ours["logits"], ref["logits"], rtol=1e-5, atol=1e-5)
    # Buffers are reused: below one buffer per tensor, and within 1.5x of the lower bound (the
    # most bytes simultaneously live at any step).
    values = compiled.memory.values.values()
    peak_live = max(sum(v.nbytes for v in values if v.first <= step <= v.last) for step in range(-1, len(compiled.steps)))
    assert peak_live <= compiled.memory.total_bytes <= 1.5 * peak_live
    assert compiled.memory.total_bytes < 0.8 * sum(v.nbytes for v in values)
    # Running twice gives the same answer (no state leaks between runs through reused buffers).
    np.testing.assert_array_equal(compiled.run(feeds)["logits"], ours["logits"])


def test_adapts_inserted_between_layouts_and_shared(rng, nhwc_relu):
    graph = chain_graph(rng, n_relu=3, readers_of_first=3)
    assignment = {l.name: REFERENCE for l in graph}
    for name in ("relu1", "extra0", "extra1", "relu2"):
        assignment[name] = nhwc_relu
    compiled = CompiledModel(graph, assignment, num_threads=2)
    adapts = [(s.name, s.what) for s in compiled.adapts]
    # a0 is read in NHWC by relu1, extra0, extra1: converted once.  r1 and r2 come back to NCHW for
    # the adds; extra0/extra1 are graph outputs, which are NCHW.
    assert adapts.count(("adapt:a0:float32:nchw->float32:nhwc", "float32:nchw->nhwc")) == 1
    assert len(adapts) == 1 + 1 + 1 + 2 + 1   # a0 in, r1 out, a1 in, extras out, r2 out
    feeds = workbench.random_inputs(graph, seed=1)
    ours, ref = compiled.run(feeds), workbench.ReferenceExecutor(graph).run(feeds)
    for k in ref:
        np.testing.assert_array_equal(ours[k], ref[k])


def test_unassigned_or_inapplicable_routine_is_an_error(rng, nhwc_relu):
    graph = chain_graph(rng, n_relu=1)
    with pytest.raises(WorkbenchError, match="add0.*no routine assigned"):
        CompiledModel(graph, {"relu0": REFERENCE})
    with pytest.raises(KeyError, match="no routine 'cpu:float32:nhwc/testonly' for Add"):
        CompiledModel(graph, {"relu0": REFERENCE, "add0": nhwc_relu})


def test_outputs_are_copies(rng):
    graph = chain_graph(rng, n_relu=1)
    compiled = CompiledModel(graph, {l.name: REFERENCE for l in graph})
    feeds = workbench.random_inputs(graph)
    first = compiled.run(feeds)["a0"]
    kept = first.copy()
    compiled.run({"x": feeds["x"] * 2})
    np.testing.assert_array_equal(first, kept)


@pytest.mark.parametrize("threads", [1, 2])
def test_big_outputs_are_copies_made_on_the_run_threads(threads):
    """An output past PARALLEL_COPY_BYTES is copied out by the kernels' copy on the run's threads:
    the same values as the reference, in an array of its own that the next run leaves alone."""
    from onnx import helper
    from onnx_helpers import make_model
    from workbench.runtime import interpreter as execute
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], [("x", [1, 40, 2000])], [("y", None)])
    graph = workbench.load(model.SerializeToString())
    assert 40 * 2000 * 4 >= execute.PARALLEL_COPY_BYTES
    compiled = CompiledModel(graph, {l.name: REFERENCE for l in graph}, num_threads=threads)
    feeds = workbench.random_inputs(graph, seed=4)
    first = compiled.run(feeds)["y"]
    np.testing.assert_array_equal(first, np.maximum(feeds["x"], 0))
    assert first.flags.c_contiguous and first.flags.writeable and first.flags.owndata
    assert not any(np.shares_memory(first, v) for v in compiled._views.values())
    kept = first.copy()
    compiled.run({"x": -feeds["x"]})
    np.testing.assert_array_equal(first, kept)


@pytest.mark.parametrize("index", [(Ellipsis, slice(10, 42)), (Ellipsis, slice(0, 10)), (slice(None), slice(0, 60, 2)),
                                   (slice(None), slice(None), slice(None), slice(0, 42, 2))])
def test_copy_out_of_strided_views(index):
    """Output views that are not contiguous (a channel slice of NHWC pixels, seen as rows) come
    out as contiguous copies of the same values: by the kernels' row copy where the rows are
    evenly spaced and contiguous, by NumPy otherwise."""
    from workbench.runtime import interpreter as execute
    whole = np.random.default_rng(2).standard_normal((1, 120, 76, 42)).astype(np.float32)
    views = [whole[index]]
    if index[0] is Ellipsis:   # channel slices also as (N, H*W, C), a view of the same rows
        rows = whole[index].view()
        rows.shape = (1, 120 * 76, rows.shape[-1])
        views.append(rows)
    for view in views:
        assert view.nbytes >= execute.PARALLEL_COPY_BYTES and not view.flags.c_contiguous
        for threads in (1, 2):
            out = execute.copy_out(view, threads)
            np.testing.assert_array_equal(out, view)
            assert out.flags.c_contiguous and not np.shares_memory(out, whole)


def test_view_routines_share_their_input_buffer(rng):
    class FlattenView(routines.Routine):
        op, algo, view_of_input = "Flatten", "testview", 0

        @classmethod
        def applies(cls, layer, specs):
            return True

    try:
        nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
                 helper.make_node("Flatten", ["r"], ["f"], name="flat", axis=1),
                 helper.make_node("Sigmoid", ["f"], ["y"], name="sig")]
        graph = workbench.load(make_model(nodes, [("x", [2, 3, 4, 5])], [("y", None), ("f", None)]).SerializeToString())
        assignment = {l.name: REFERENCE for l in graph}
        assignment["flat"] = FlattenView.descriptor
        compiled = CompiledModel(graph, assignment)
        assert bkey("f", "nchw") not in compiled.memory.values          # no buffer of its own
        assert np.shares_memory(compiled._views[bkey("f", "nchw")], compiled._views[bkey("r", "nchw")])
        feeds = workbench.random_inputs(graph)
        ours, ref = compiled.run(feeds), workbench.ReferenceExecutor(graph).run(feeds)
        for k in ref:
            np.testing.assert_array_equal(ours[k], ref[k])
    finally:
        del routines._REGISTRY["Flatten"][FlattenView.descriptor]


@pytest.mark.parametrize("name, resolution", [("resnet50", 64), ("mobilenet_v2", 64), ("mobilenet_v3_large", 96),
                                              ("vgg16", 32)])
@pytest.mark.parametrize("family", ["cpu:float32:nchw/*", "cpu:float32:nhwc/*"])
def test_zoo_runs_without_reference_routines_and_without_allocating(name, resolution, family):
    import tracemalloc
    from workbench.tuning.filters import assign
    graph = workbench.load(zoo.build(name, resolution=resolution, batch=2))
    assignment, _ = assign(graph, [family])
    assert not [n for n, d in assignment.items() if d.endswith("/reference")]
    compiled = CompiledModel(graph, assignment, num_threads=2)
    feeds = workbench.random_inputs(graph, seed=7)
    ours = compiled.run(feeds)["logits"]
    ref = workbench.ReferenceExecutor(graph).run(feeds)["logits"]
    assert np.abs(ours - ref).max() <= 1e-4 * np.abs(ref).max()
    # Steady state: no tensor is allocated per inference (Python bookkeeping only, a few KB,
    # against activations of several MB).
    tracemalloc.start()
    compiled.run(feeds)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    activations = sum(v.nbytes for v in compiled.memory.values.values())
    assert peak < 64 * 1024 + ours.nbytes and activations > 20 * peak


def residual_graph(rng, later_reader=False, residual_from_input=False):
    """c1(x) -> t, c2(t) -> u, c3(u) + t -> z (Add fused into c3 as its residual); optionally a
    Relu reading t after c3, or the residual a second graph input instead of t."""
    def conv(name, src, dst):
        return helper.make_node("Conv", [src, f"{name}_w", f"{name}_b"], [dst], name=name)
    nodes = [conv("c1", "x", "t"), conv("c2", "t", "u"), conv("c3", "u", "v"),
             helper.make_node("Add", ["v", "x2" if residual_from_input else "t"], ["z"], name="add")]
    outputs = [("z", None)]
    if later_reader:
        nodes.append(helper.make_node("Relu", ["t"], ["later"], name="later"))
        outputs.append(("later", None))
    inits = [(f"{n}_{k}", rng.standard_normal((16, 16, 1, 1) if k == "w" else (16,)).astype(np.float32))
             for n in ("c1", "c2", "c3") for k in ("w", "b")]
    inputs = [("x", [1, 16, 13, 15])] + ([("x2", [1, 16, 13, 15])] if residual_from_input else [])
    return workbench.load(make_model(nodes, inputs, outputs, inits).SerializeToString())


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("case, in_place", [(dict(), {"c3": 3}), (dict(later_reader=True), {}),
                                            (dict(residual_from_input=True), {})])
def test_dead_residual_is_overwritten_in_place(rng, layout, case, in_place):
    """A fused residual that nothing reads afterwards becomes the output buffer of a routine that
    accumulates onto it; one still read later, or a graph input's own buffer, is left alone (an
    input's NHWC copy made by an adapt is not).  Either way the outputs match the reference
    executor, on a first and a second run."""
    descriptor = f"cpu:float32:{layout}/gemm1x1_avx512"
    if case.get("residual_from_input") and layout == "nhwc":
        in_place = {"c3": 3}
    graph = residual_graph(rng, **case)
    c3 = graph.layer("c3")
    if not routines.get("Conv", descriptor).applies(c3, graph.input_specs(c3)):
        pytest.skip("this CPU lacks AVX-512 or gemm512_avx512 is not built")
    assert c3.attrs.get("residual")
    compiled = CompiledModel(graph, {l.name: descriptor if l.op == "Conv" else REFERENCE for l in graph}, 2)
    assert compiled.in_place == in_place
    if in_place:
        t = bkey("x2" if case.get("residual_from_input") else "t", layout)
        assert t in compiled.memory.values and np.shares_memory(compiled._views[t], compiled._views[bkey("z", layout)])
    ref = workbench.ReferenceExecutor(graph)
    for seed in (0, 1):
        feeds = workbench.random_inputs(graph, seed=seed)
        ours, want = compiled.run(feeds), ref.run(feeds)
        for k in want:
            np.testing.assert_allclose(ours[k], want[k], rtol=1e-4, atol=1e-4 * np.abs(want[k]).max())


@pytest.mark.parametrize("shape", [[2, 5, 1, 1], [2, 1, 4, 3]])
def test_layout_adapt_of_identical_bytes_is_a_view(rng, nhwc_relu, shape):
    """An (N, C, 1, 1) or (N, 1, H, W) tensor is the same bytes in NCHW and NHWC: the executor
    shares the buffer instead of running an adapt, and the profiler prices it at zero."""
    from workbench.routines import adapts as adapt
    from workbench.tuning import profiler as profile
    from workbench.ir.graph import TensorSpec
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Sigmoid", ["r"], ["y"], name="sig")]
    graph = workbench.load(make_model(nodes, [("x", shape)], [("y", None)]).SerializeToString(), fuse=False)
    compiled = CompiledModel(graph, {"relu": nhwc_relu, "sig": REFERENCE})
    assert compiled.adapts == []
    assert np.shares_memory(compiled._views[bkey("r", "nhwc")], compiled._views[bkey("r", "nchw")])
    feeds = workbench.random_inputs(graph)
    np.testing.assert_array_equal(compiled.run(feeds)["y"], workbench.ReferenceExecutor(graph).run(feeds)["y"])
    a = adapt.path(TensorSpec(tuple(shape), layout="nhwc"), Format("float32", "nchw"))[0]
    assert profile._time_adapt(TensorSpec(tuple(shape), layout="nhwc"), a, 3, 1).median == 0
    assert not a.is_view(TensorSpec((2, 5, 2, 1), layout="nhwc"))


def test_input_read_only_by_an_adapt_is_not_copied_first(rng, nhwc_relu):
    """A graph input whose only readers want another layout is adapted straight from the
    caller's array (no copy into our buffer first); non-contiguous arrays are accepted, and the
    results match the reference for each new input."""
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Sigmoid", ["r"], ["y"], name="sig")]
    graph = workbench.load(make_model(nodes, [("x", [2, 3, 5, 7])], [("y", None)]).SerializeToString(), fuse=False)
    compiled = CompiledModel(graph, {"relu": nhwc_relu, "sig": REFERENCE})
    assert compiled._direct == {"x"} and [s.name for s in compiled.adapts][0] == "adapt:x:float32:nchw->float32:nhwc"
    ref = workbench.ReferenceExecutor(graph)
    for seed in (0, 1):
        x = np.random.default_rng(seed).standard_normal((2, 7, 5, 3)).astype(np.float32).transpose(0, 3, 2, 1)
        np.testing.assert_array_equal(compiled.run({"x": x})["y"], ref.run({"x": np.ascontiguousarray(x)})["y"])
    # An input a layer reads in its own layout is still copied in.
    assert CompiledModel(graph, {"relu": REFERENCE, "sig": REFERENCE})._direct == set()


def test_blas_held_at_one_thread_only_for_plans_that_may_call_it(rng, monkeypatch):
    """Holding the BLAS at one thread costs every run; a plan whose routines all run our own
    kernels skips it, and so does one falling back to the NumPy reference of ops that multiply no
    matrices; one with a routine that may call the BLAS (the reference of a MatMul) holds it."""
    from workbench.runtime import compiled as compiled_mod
    held = []

    class Counting(compiled_mod.SerialBlas):
        def __enter__(self):
            held.append(True)
            return super().__enter__()

    monkeypatch.setattr(compiled_mod, "SerialBlas", Counting)
    graph = chain_graph(rng, n_relu=2)
    feeds = workbench.random_inputs(graph)
    expected = workbench.ReferenceExecutor(graph).run(feeds)["a1"]
    direct = {l.name: "cpu:float32:nchw/direct" for l in graph}
    assert all(not routines.get(l.op, direct[l.name]).uses_blas for l in graph)
    fast = CompiledModel(graph, direct)
    out = fast.run(feeds)["a1"]
    assert held == []
    reference = CompiledModel(graph, {l.name: REFERENCE for l in graph})
    np.testing.assert_array_equal(reference.run(feeds)["a1"], expected)
    assert held == []
    np.testing.assert_array_equal(out, expected)
    from onnx import helper
    from onnx_helpers import make_model
    w = rng.standard_normal((6, 4)).astype(np.float32)
    model = make_model([helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Relu", ["m"], ["y"])],
                       [("x", [3, 6])], [("y", None)], [("w", w)])
    mm = workbench.load(model.SerializeToString(), fuse=False)
    x = rng.standard_normal((3, 6)).astype(np.float32)
    got = CompiledModel(mm, {l.name: REFERENCE for l in mm}).run({"x": x})["y"]
    assert held == [True]
    np.testing.assert_allclose(got, np.maximum(x @ w, 0), rtol=1e-6)


def test_inputs_fast_path_takes_only_exact_arrays(rng):
    """Feeds that are exactly the inputs' arrays (in any memory order) skip the general check;
    anything else (a float64 array, a wrong shape, a wrong name) is refused with its reason."""
    graph = chain_graph(rng, n_relu=1)
    compiled = CompiledModel(graph, {l.name: REFERENCE for l in graph})
    x = workbench.random_inputs(graph)["x"]
    got = compiled.run({"x": x})["a0"]
    np.testing.assert_array_equal(got, workbench.ReferenceExecutor(graph).run({"x": x})["a0"])
    np.testing.assert_array_equal(compiled.run({"x": np.asfortranarray(x)})["a0"], got)
    with pytest.raises(WorkbenchError, match="'x': dtype float64"):
        compiled.run({"x": x.astype(np.float64)})
    with pytest.raises(WorkbenchError, match=r"'x': shape \(2, 3, 7, 5\)"):
        compiled.run({"x": np.ascontiguousarray(x.transpose(0, 1, 3, 2))})
    with pytest.raises(WorkbenchError, match="unknown input name"):
        compiled.run({"y": x})
