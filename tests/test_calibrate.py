"""In-context timing (workbench.tuning.in_context): the overlay of in-context costs on the profile
(against hand-computed values), and a calibrated session: every routine of the timed plans has
its in-context cost, the plan is the selection's optimum on the overlaid costs (checked with the
MILP), the prediction is that cost plus the measured overhead, the model still computes what the
ONNX Runtime computes, and a tuned file keeps the prediction."""
import pytest

from workbench import Session, zoo
from workbench.ir.formats import Format
from workbench.tuning import search
from workbench import routines
from workbench.tuning.in_context import Context, adapt_key, challenger, overlay
from workbench.onnx_io.ort import run_onnxruntime

from test_session import assert_close, milp_cost


def test_overlay_takes_timed_costs_and_scales_the_layers_others():
    costs = {"a": {"x": 1.0, "y": 2.0}, "b": {"x": 4.0}, "c": {"x": 3.0, "y": 1.0}}
    adapts = {("t", "nchw", "nhwc"): 0.5, ("u", "nhwc", "nchw"): 0.25}
    ctx = Context(routine={("a", "x"): 1.5, ("c", "y"): 2.0, ("gone", "x"): 9.0},
                  adapt={("t", "nchw", "nhwc"): 0.75, ("v", "nchw", "nhwc"): 1.0})
    ctx.ratio = {"a": 1.5, "c": 2.0}
    got, got_adapts = overlay(costs, adapts, ctx)
    assert got == {"a": {"x": 1.5, "y": 3.0}, "b": {"x": 4.0}, "c": {"x": 6.0, "y": 2.0}}
    assert got_adapts == {("t", "nchw", "nhwc"): 0.75, ("u", "nhwc", "nchw"): 0.25}
    assert costs["a"] == {"x": 1.0, "y": 2.0} and adapts[("t", "nchw", "nhwc")] == 0.5   # inputs untouched


def test_context_add_keeps_the_last_ratio_per_layer():
    ctx = Context()
    ctx.add({("a", "x"): 3.0}, {}, {"a": {"x": 2.0, "y": 1.0}})
    ctx.add({("a", "y"): 1.0}, {("t", "nchw", "nhwc"): 0.1}, {"a": {"x": 2.0, "y": 0.5}})
    assert ctx.ratio == {"a": 2.0}
    assert ctx.routine == {("a", "x"): 3.0, ("a", "y"): 1.0} and ctx.adapt == {("t", "nchw", "nhwc"): 0.1}


def test_adapt_key_splits_tensor_names_with_colons():
    class Step:
        name = "adapt:block:1/out:float32:nchw->float32:nhwc"
    assert adapt_key(Step) == ("block:1/out", Format("float32", "nchw"), Format("float32", "nhwc"))


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    model = zoo.build("mobilenet_v2", resolution=64)
    s = Session.from_onnx(model, num_threads=2, db=tmp_path_factory.mktemp("db") / "p.sqlite")
    s.profile(repeats=2)
    alone = s.tune()
    alone_choice = dict(alone.choice)
    s.time_in_context(runs=3)
    return s, model, alone_choice


def test_calibrated_plan_is_the_optimum_of_the_in_context_costs(calibrated):
    s, _, alone_choice = calibrated
    ctx = s.context
    # three rounds, and a fourth timing the last plan where the three did not settle
    assert 1 <= ctx.rounds <= 4 and len(ctx.walls) == ctx.rounds and all(w > 0 for w in ctx.walls)
    assert ctx.rounds < 4 or ctx.plans_changed == 3
    costs, _ = s.costs()
    profiled, _ = s.costs(in_context=False)
    assert profiled == {l: {d: r.median for d, r in recs.items()} for l, recs in s.profiled.routine.items()}
    for layer, d in alone_choice.items():   # the first plan was timed: its costs are in-context
        assert costs[layer][d] == ctx.routine[(layer, d)]
    for layer, per in costs.items():        # the rest of a timed layer: scaled by its ratio
        for d, c in per.items():
            if (layer, d) not in ctx.routine:
                assert c == pytest.approx(profiled[layer][d] * ctx.ratio.get(layer, 1.0), rel=1e-12)
    assert s.plan.cost == pytest.approx(milp_cost(s.problem()), rel=1e-7)
    assert s.plan.cost == pytest.approx(search.evaluate(s.problem(), s.plan.choice)[0], rel=1e-12)
    assert s.predicted_s == pytest.approx(s.plan.cost + ctx.overhead_s, rel=1e-12)
    assert ctx.overhead_s >= 0


def test_calibrated_session_computes_the_model(calibrated):
    s, model, _ = calibrated
    feeds = s.random_inputs(seed=3)
    assert_close(s.run(feeds), run_onnxruntime(model, feeds))


def test_tuned_file_keeps_the_in_context_prediction(calibrated, tmp_path):
    s, _, _ = calibrated
    path = tmp_path / "m.tuned.onnx"
    s.export(path, measure_runs=0)
    loaded = Session.load(str(path), warn=False)
    assert loaded.predicted_s == pytest.approx(s.predicted_s, rel=1e-6)
    assert dict(loaded.plan.choice) == dict(s.plan.choice)


def test_reprofiling_a_layer_drops_its_in_context_costs(tmp_path):
    s = Session.from_onnx(zoo.build("tiny", resolution=32), num_threads=1, db=tmp_path / "p.sqlite")
    s.profile(repeats=2)
    s.tune(in_context=True)
    layers = sorted({layer for layer, _ in s.context.routine})
    first = layers[0]
    s.profile(repeats=2, layers=[first])
    assert not any(layer == first for layer, _ in s.context.routine) and first not in s.context.ratio
    assert any(layer != first for layer, _ in s.context.routine)
    s.profile(repeats=2, reprofile=True)
    assert s.context.routine == {} and s.context.ratio == {} and s.context.adapt == {}
    costs, _ = s.costs()
    assert costs == s.costs(in_context=False)[0]


def test_challenger_takes_each_layers_cheapest_near_tie_of_the_same_layouts(calibrated):
    s, _, _ = calibrated
    costs, choice = s.costs()[0], dict(s.plan.choice)

    def formats(layer, descriptor):
        r = routines.get(layer.op, descriptor)
        return r.input_layouts(layer, s.graph.input_specs(layer)), r.output_layouts(layer)

    for margin in (0.0, 0.25, 10.0):
        other = challenger(s, costs, margin) or choice
        assert set(other) == set(choice)
        for layer in s.graph:
            per, chosen = costs[layer.name], choice[layer.name]
            fits = [d for d in per if d != chosen and per[d] <= (1 + margin) * per[chosen]
                    and formats(layer, d) == formats(layer, chosen)]
            if fits:   # brute force: the cheapest that fits
                assert per[other[layer.name]] == min(per[d] for d in fits), layer.name
                assert formats(layer, other[layer.name]) == formats(layer, chosen)
            else:
                assert other[layer.name] == chosen, layer.name
    # The calibrated session timed the first plan's challengers in context too.
    timed = {}
    for layer, d in s.context.routine:
        timed.setdefault(layer, set()).add(d)
    assert 0 < s.context.challenged <= sum(len(v) >= 2 for v in timed.values())
