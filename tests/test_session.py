"""The tuning Session end to end on small models: the plan is the exact optimum of the profiled
problem (checked with the MILP), beats greedy and every single-family plan, computes the model
(reference executor and ONNX Runtime), honours pins and filters, reuses the profile, and reports
bad requests with errors that name the layer and the problem."""
import functools
import time

import numpy as np
import onnx
import pytest

import workbench
from workbench.routines import adapts as adapt
from workbench import routines, zoo
from workbench.tuning import search
from workbench.tuning.filters import FilterError, assign
from workbench.onnx_io.ort import relative_error, run_onnxruntime
from workbench.tuning.profiledb import ProfileDatabase
from workbench.session import NotTunedError, PinError, Session

REPEATS = 2


@pytest.fixture(scope="module")
def db_path(tmp_path_factory):
    """One profile database for the module: the first session measures, the others reuse."""
    return tmp_path_factory.mktemp("profiles") / "p.sqlite"


@functools.lru_cache(maxsize=None)
def _zoo_bytes(name, resolution):
    return zoo.build(name, resolution=resolution).SerializeToString()


def zoo_model(name, resolution=64):
    """A zoo model, built once per test run (building calibrates BatchNorm: seconds)."""
    return onnx.load_from_string(_zoo_bytes(name, resolution))


def session_of(name, db, resolution=64, profile=True):
    model = zoo_model(name, resolution)
    s = Session.from_onnx(model, num_threads=2, db=db)
    if profile:
        s.profile(repeats=REPEATS)
    return s, model


def milp_cost(problem):
    """The optimum by :func:`search.solve_milp` (an independent exact method)."""
    return search.solve_milp(problem).cost


def assert_close(ours, ref, rtol=1e-4):
    assert set(ours) == set(ref)
    for k in ref:
        assert ours[k].shape == ref[k].shape, k
        assert relative_error(ours[k], ref[k]) <= rtol, (k, relative_error(ours[k], ref[k]))


@pytest.mark.parametrize("name", ["tiny", "resnet50", "mobilenet_v3_large"])
def test_tuned_plan_is_optimal_and_computes_the_model(db_path, name):
    s, model = session_of(name, db_path)
    plan = s.retune()
    assert plan is s.plan and set(plan.choice) == {l.name for l in s.graph}
    # The exact optimum of the same problem, by an independent solver.
    assert plan.cost == pytest.approx(milp_cost(s.problem(s.allowed())), rel=1e-7)
    # The plan's cost is what its routines and adapts cost on this profile.
    cost, adapts = search.evaluate(s.problem(s.allowed()), plan.choice)
    assert cost == pytest.approx(plan.cost, rel=1e-9)
    assert sorted(adapts) == sorted(plan.adapts)
    assert s.predicted_s == plan.cost
    assert plan.cost <= s.greedy_plan().cost * (1 + 1e-9)
    families = s.family_plans()
    assert "cpu:float32:nchw/*" in families and "cpu:float32:nhwc/*" in families
    for fam, p in families.items():
        assert plan.cost <= p.cost * (1 + 1e-9), fam
    # It computes the model.
    feeds = workbench.random_inputs(s.graph, seed=3)
    ours = s.run(feeds)
    assert_close(ours, workbench.ReferenceExecutor(s.graph).run(feeds))
    assert_close(ours, run_onnxruntime(model, feeds))
    # Every adapt of the plan runs, but those between identical bytes (a pooled (N, C, 1, 1)),
    # which share the buffer.
    views = [1 for t, src, dst in plan.adapts if adapt.is_view(s.graph.spec(t).with_format(src), dst)]
    assert len(s.compile().adapts) == len(plan.adapts) - len(views)


def test_family_plans_are_what_each_filter_assigns(db_path):
    s, _ = session_of("tiny", db_path)
    s.retune()
    families = s.family_plans()
    for fam, p in families.items():
        assert p.choice == assign(s.graph, [fam])[0], fam
    # winograd4 serves tiny's 3x3 convs, so its family is offered; the nhwc one runs in nhwc
    assert "cpu:float32:nchw/winograd4" in families
    nhwc = families["cpu:float32:nhwc/*"].choice
    assert all(d.startswith("cpu:float32:nhwc/") for n, d in nhwc.items()
               if any(r.layout == "nhwc" for r in routines.applicable(s.graph, s.graph.layer(n))))


def _non_optimal(s, layer_name):
    """An applicable, non-reference routine for the layer that the current plan does not use."""
    chosen = s.plan.choice[layer_name]
    options = [r.descriptor for r in routines.applicable(s.graph, s.graph.layer(layer_name))
               if r.descriptor != chosen and r.algo != "reference"]
    return options[-1]


def test_pin_retune_unpin(db_path):
    s, _ = session_of("resnet50", db_path)
    best = s.retune()
    layer = "layer2.1.conv2"
    other = _non_optimal(s, layer)
    assert s.pin(layer, other) is s
    pinned = s.retune()
    assert pinned.choice[layer] == other
    assert pinned.cost >= best.cost * (1 - 1e-9)
    # the pinned plan is the optimum among plans using that routine
    assert pinned.cost == pytest.approx(milp_cost(s.problem(s.allowed())), rel=1e-7)
    rows = {r["name"]: r for r in s.layer_rows()}
    assert rows[layer]["pinned"] and rows[layer]["routine"] == other
    assert sum(r["pinned"] for r in rows.values()) == 1
    # unpinning restores the optimum
    s.unpin(layer)
    assert s.pins == {}
    restored = s.retune()
    assert restored.choice == best.choice and restored.cost == pytest.approx(best.cost, rel=1e-12)


def test_pin_by_index_and_tune_pins(db_path):
    s, _ = session_of("tiny", db_path)
    s.retune()
    names = [l.name for l in s.graph]
    other = _non_optimal(s, names[3])
    s.pin(3, other)
    assert s.pins == {names[3]: other}
    s.unpin("3")   # a digit string is an index too
    assert s.pins == {}
    other0 = _non_optimal(s, names[0])
    plan = s.tune(pins={names[0]: other0, 5: "cpu:float32:nhwc/im2col"})
    assert plan.choice[names[0]] == other0 and plan.choice[names[5]] == "cpu:float32:nhwc/im2col"
    assert s.pins == {names[0]: other0, names[5]: "cpu:float32:nhwc/im2col"}
    # A bad pin in tune(pins=...) leaves the previous pins in place.
    with pytest.raises(PinError):
        s.tune(pins={names[1]: "cpu:float32:nhwc/nosuchalgo"})
    assert s.pins == {names[0]: other0, names[5]: "cpu:float32:nhwc/im2col"}


def test_filters_restrict_the_plan(db_path):
    s, model = session_of("tiny", db_path)
    s.tune(filters=["cpu:float32:nchw/*"])
    for layer in s.graph:
        chosen = s.plan.choice[layer.name]
        if any(r.descriptor.startswith("cpu:float32:nchw/") for r in routines.applicable(s.graph, layer)):
            assert chosen.startswith("cpu:float32:nchw/"), (layer.name, chosen)
    assert s.plan.adapts == []   # all nchw: nothing to convert
    assert s.plan.cost == pytest.approx(milp_cost(s.problem(s.allowed())), rel=1e-7)
    # a later filter with a selection overrides for its layers
    s.tune(filters=["cpu:float32:nchw/*", "cpu:float32:nhwc/im2col@0,2"])
    names = [l.name for l in s.graph]
    assert s.plan.choice[names[0]] == s.plan.choice[names[2]] == "cpu:float32:nhwc/im2col"
    feeds = workbench.random_inputs(s.graph)
    assert_close(s.run(feeds), run_onnxruntime(model, feeds))
    # tune(filters=[]) clears them again
    free = s.tune(filters=[])
    assert s.filters == []
    assert free.cost == pytest.approx(milp_cost(s.problem()), rel=1e-7)


def test_filter_naming_a_layer_it_cannot_serve_is_an_error(db_path):
    s, _ = session_of("resnet50", db_path, profile=False)
    s.filters = ["cpu:float32:nchw/*"]
    with pytest.raises(FilterError, match=r"winograd4@0.*selects layer 0.*conv1.*no matching routine"):
        s.tune(filters=["cpu:float32:nchw/winograd4@0"])
    assert s.profiled is None   # rejected before anything was measured
    assert s.filters == ["cpu:float32:nchw/*"]   # and the session keeps its filters
    with pytest.raises(FilterError, match="matches no routine"):
        s.tune(filters=["cpu:float32:nchw/nosuchalgo"])


def test_pin_errors_name_the_layer_and_the_problem(db_path):
    s, _ = session_of("resnet50", db_path, profile=False)
    with pytest.raises(PinError, match=r"no layer named 'nope'"):
        s.pin("nope", "cpu:float32:nchw/im2col")
    with pytest.raises(PinError, match=r"no layer 999"):
        s.pin(999, "cpu:float32:nchw/im2col")
    with pytest.raises(PinError, match=r"layer1\.0\.conv1.*cpu:float32:nchw/nosuchalgo"):
        s.pin("layer1.0.conv1", "cpu:float32:nchw/nosuchalgo")
    with pytest.raises(PinError, match=r"layer1\.0\.conv1.*does not apply"):   # Winograd on a 1x1 conv
        s.pin("layer1.0.conv1", "cpu:float32:nchw/winograd4")
    with pytest.raises(PinError, match=r"maxpool.*cpu:float32:nchw/im2col"):   # a Conv routine on a MaxPool
        s.pin("maxpool", "cpu:float32:nchw/im2col")
    assert s.pins == {}
    with pytest.raises(PinError, match=r"'layer1\.0\.conv1' is not pinned"):
        s.unpin("layer1.0.conv1")
    for e in (PinError, NotTunedError):
        assert issubclass(e, workbench.WorkbenchError)


def test_operations_before_tune_raise_not_tuned(db_path, tmp_path):
    s, _ = session_of("tiny", db_path, profile=False)
    feeds = workbench.random_inputs(s.graph)
    for call in (lambda: s.run(feeds), lambda: s.export(tmp_path / "m.onnx"), lambda: s.compile(),
                 lambda: s.predicted_s, lambda: s.layer_rows(), lambda: s.measure(runs=1),
                 lambda: s.export_profile(tmp_path / "p.jsonl"), lambda: s.costs()):
        with pytest.raises(NotTunedError, match=r"tune\(\)"):
            call()
    assert not (tmp_path / "m.onnx").exists()


def test_retune_after_pin_reuses_the_profile_and_is_fast(db_path):
    s, _ = session_of("resnet50", db_path)
    s.retune()
    db = ProfileDatabase(db_path, num_threads=2)
    n_records = len(db.records())
    profiled = s.profiled
    s.pin("layer3.2.conv2", _non_optimal(s, "layer3.2.conv2"))
    t0 = time.perf_counter()
    plan = s.retune()
    elapsed = time.perf_counter() - t0
    assert elapsed < 1.0, elapsed
    assert s.profiled is profiled   # the same Profile object: nothing measured again
    assert len(db.records()) == n_records
    assert plan.choice["layer3.2.conv2"] == s.pins["layer3.2.conv2"]
    assert s.search_s is not None and s.search_s <= elapsed


def test_second_session_on_the_same_database_measures_nothing(tmp_path):
    db = tmp_path / "p.sqlite"
    first = Session.from_onnx(zoo_model("tiny", 32), num_threads=2, db=db)
    first.tune()
    assert first.profiled.measured > 0
    second = Session.from_onnx(zoo_model("tiny", 32), num_threads=2, db=db)
    plan = second.tune()
    assert second.profiled.measured == 0
    assert second.profiled.reused == first.profiled.measured + first.profiled.reused
    assert plan.choice == first.plan.choice and plan.cost == first.plan.cost
    # another thread count is another machine fingerprint: measured afresh
    third = Session.from_onnx(zoo_model("tiny", 32), num_threads=1, db=db)
    third.profile(repeats=1)
    assert third.profiled.measured > 0


def test_measure_timed_run_and_rows(db_path):
    s, _ = session_of("tiny", db_path)
    s.retune()
    t = s.measure(runs=3, warmup=1)
    assert s.measured is t and len(t.samples) == 3 and t.median > 0
    steps = s.timed_run()
    assert [st.name for st, _, _ in steps] == [st.name for st in s.compile().steps]
    assert all(start >= 0 and dur >= 0 for _, start, dur in steps)
    rows = s.layer_rows()
    assert [r["name"] for r in rows] == [l.name for l in s.graph]
    costs, _ = s.costs()
    for r in rows:
        assert r["routine"] == s.plan.choice[r["name"]]
        assert r["cost_ms"] == pytest.approx(costs[r["name"]][r["routine"]] * 1e3)
        assert r["candidates"] == len(costs[r["name"]])
    # every adapt step of the compiled plan is listed under the layers that read its tensor
    listed = {a for r in rows for a in r["adapts"]}
    assert listed == {st.name for st in s.compile().adapts}
    assert "tuned" in repr(s) and "tiny" in repr(s)


def test_bad_io_format_is_an_error():
    with pytest.raises(workbench.WorkbenchError, match="io_format"):
        Session(workbench.load(zoo_model("tiny", 32)), io_format="nwhc")


def test_nhwc_io_format_runs_in_nhwc(db_path):
    s = Session.from_onnx(zoo_model("tiny", 32), num_threads=2, db=db_path, io_format="nhwc")
    s.profile(repeats=REPEATS)
    plan = s.retune()
    assert plan.cost == pytest.approx(milp_cost(s.problem(s.allowed())), rel=1e-7)
    feeds = s.random_inputs(seed=4)
    assert feeds["input"].shape == (1, 32, 32, 3)
    nchw = {"input": np.ascontiguousarray(feeds["input"].transpose(0, 3, 1, 2))}
    assert_close(s.run(feeds), workbench.ReferenceExecutor(s.graph).run(nchw))
    # the compiled model converts exactly where the plan said it would
    # Every adapt of the plan runs, but those between identical bytes (a pooled (N, C, 1, 1)),
    # which share the buffer.
    views = [1 for t, src, dst in plan.adapts if adapt.is_view(s.graph.spec(t).with_format(src), dst)]
    assert len(s.compile().adapts) == len(plan.adapts) - len(views)


def test_tensor_names_with_colons(tmp_path):
    """TensorFlow-style names ("x:0"): adapts are found and listed under the layers they feed."""
    from onnx import helper

    from onnx_helpers import make_model
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    convs = (("c1", "input:0", "a:0", 3, 8), ("c2", "a:0", "b:0", 8, 8), ("c3", "b:0", "out:0", 8, 4))
    for name, x, y, cin, cout in convs:
        nodes.append(helper.make_node("Conv", [x, f"{name}.w:0"], [y], name=name, kernel_shape=[3, 3], pads=[1] * 4))
        inits.append((f"{name}.w:0", rng.standard_normal((cout, cin, 3, 3)).astype(np.float32)))
    model = make_model(nodes, [("input:0", [1, 3, 12, 12])], [("out:0", [1, 4, 12, 12])], inits)
    s = Session.from_onnx(model, num_threads=2, db=tmp_path / "p.sqlite")
    s.profile(repeats=1)
    s.tune(filters=["cpu:float32:nchw/*", "cpu:float32:nhwc/im2col@c2"])
    assert sorted((t, str(a), str(b)) for t, a, b in s.plan.adapts) == [("a:0", "float32:nchw", "float32:nhwc"),
                                                                      ("b:0", "float32:nhwc", "float32:nchw")]
    rows = {r["name"]: r["adapts"] for r in s.layer_rows()}
    assert rows == {"c1": [], "c2": ["adapt:a:0:float32:nchw->float32:nhwc"], "c3": ["adapt:b:0:float32:nhwc->float32:nchw"]}
    feeds = s.random_inputs()
    assert_close(s.run(feeds), run_onnxruntime(model, feeds))


def test_reference_is_profiled_only_when_a_filter_or_pin_names_it(db_path):
    s, _ = session_of("tiny", db_path, resolution=None)
    first = s.graph.layer("stem.conv")
    assert not any(d.endswith("/reference") for d in s.profiled.routine[first.name])   # the oracle is no candidate
    s.tune()
    s.tune(filters=["cpu:float32:nchw/*"])   # a wildcard does not take it in either
    profiled = {d for recs in s.profiled.routine.values() for d in recs}
    only_reference = [l.name for l in s.graph
                      if [r.algo for r in workbench.routines.applicable(s.graph, l)] == ["reference"]]
    assert not any(d.endswith("/reference") for l in s.graph if l.name not in only_reference
                   for d in s.profiled.routine[l.name]), profiled
    plan = s.tune(filters=["cpu:float32:nchw/reference@stem.conv"])
    assert plan.choice["stem.conv"] == "cpu:float32:nchw/reference"
    assert "cpu:float32:nchw/reference" in s.profiled.routine["stem.conv"]   # measured on demand
    feeds = workbench.random_inputs(s.graph)
    assert_close(s.run(feeds), workbench.ReferenceExecutor(s.graph).run(feeds))
    s.tune(filters=[])
    s.pin("fc", "cpu:float32:nchw/reference").retune()
    assert s.plan.choice["fc"] == "cpu:float32:nchw/reference"


def test_milp_is_exact_with_costs_in_seconds():
    # Costs of 1e-5 s differ by less than HiGHS's absolute gap (1e-6) unless solve_milp scales them.
    from workbench.tuning.search import Candidate, Node, Problem
    nodes = [Node(f"n{i}", (f"t{i - 1}",) if i else ("x",), (f"t{i}",),
                  (Candidate("a", 1e-5 + 3e-7 * (i % 3), ("nchw",), "nchw"),
                   Candidate("b", 1e-5 + 2e-7 * ((i + 1) % 3), ("nhwc",), "nhwc"))) for i in range(12)]
    adapt = {(t, s, d): 4e-7 for t in ["x"] + [f"t{i}" for i in range(12)] for s, d in (("nchw", "nhwc"), ("nhwc", "nchw"))}
    problem = Problem(nodes, adapt, {"x": "nchw"}, {"t11": "nchw"})
    assert search.solve_milp(problem).cost == pytest.approx(search.brute_force(problem).cost, rel=1e-12, abs=0)


def test_family_plans_price_a_reference_fallback(tmp_path, monkeypatch):
    """A layer with only the reference routine in one layout (here Softmax without its NCHW
    kernels, as on YOLOv8 before Softmax took any axis): that family runs the reference, which
    family_plans profiles and prices; every other family's choice for it is priced too (all
    families' routines of a layer are profiled, not the last family's only), also for a loaded
    tuned file, which holds no profile."""
    from onnx import TensorProto, helper, numpy_helper
    routines.load_all()
    table = dict(routines._REGISTRY["Softmax"])
    monkeypatch.setitem(routines._REGISTRY, "Softmax",
                        {d: r for d, r in table.items() if not d.startswith("cpu:float32:nchw/direct")})
    w = numpy_helper.from_array(np.random.default_rng(3).standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Softmax", ["c"], ["y"], axis=1, name="sm")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 10])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    s = Session.from_onnx(model, num_threads=2, db=tmp_path / "p.sqlite")
    s.profile(repeats=REPEATS)
    s.tune()
    assert "cpu:float32:nchw/reference" not in s.profiled.routine["sm"]   # not a default candidate
    families = s.family_plans()
    assert families["cpu:float32:nchw/*"].choice["sm"] == "cpu:float32:nchw/reference"
    assert families["cpu:float32:nhwc/*"].choice["sm"].startswith("cpu:float32:nhwc/direct")
    costs, _ = s.costs()
    prob = s.problem()
    for fam, plan in families.items():
        assert plan.choice == assign(s.graph, [fam])[0]
        assert plan.cost == pytest.approx(search.evaluate(prob, plan.choice)[0])
        assert plan.cost >= sum(costs[layer][d] for layer, d in plan.choice.items())
    x = np.random.default_rng(0).standard_normal((1, 3, 12, 10)).astype(np.float32)
    ref = run_onnxruntime(model, {"x": x})["y"]
    s.plan = families["cpu:float32:nchw/*"]
    s._compiled = None
    np.testing.assert_allclose(s.run({"x": x})["y"], ref, rtol=1e-4, atol=1e-6)
    s.tune()
    path = tmp_path / "t.tuned.onnx"
    s.export(path, measure_runs=2)
    loaded = workbench.load(str(path))
    assert set(loaded.family_plans()) == set(families)
