"""workbench.widgets, at the level of their traits: what each view holds after each action, checked
against the Session (which the views only draw) and against files the actions write."""
import numpy as np
import pytest

import workbench
from workbench import Session, profile, routines, zoo
from workbench.widgets import Workbench


@pytest.fixture(scope="module")
def model():
    return zoo.build("mobilenet_v2", resolution=32)


@pytest.fixture
def bench(model, tmp_path_factory):
    db = tmp_path_factory.getbasetemp() / "widgets.sqlite"   # shared: later sessions tune from the warm db
    session = Session.from_onnx(model, num_threads=2, db=db)
    return Workbench(session, export_path=str(tmp_path_factory.mktemp("export") / "tuned.onnx"))


def snapshot(b):
    """What every view shows, as plain values."""
    return dict(heatmap_chosen=list(zip(b.heatmap.figure.data[1].x, b.heatmap.figure.data[1].y)),
                heatmap_pinned=list(zip(b.heatmap.figure.data[2].x, b.heatmap.figure.data[2].y)),
                plan_table=b.plan_table.widget.value,
                graph=[(t.name, tuple(t.x or ())) for t in b.plan_graph.figure.data],
                dp=b.dp.table.value, summary=b.summary.table.value, headline=b.summary.headline.value,
                bars=tuple(b.summary.bars.data[0].y))


def other_layout_routine(session):
    """A (layer, routine) whose routine applies and has another layout than the plan's choice."""
    costs, _ = session.costs()
    for layer in session.graph:
        chosen = session.plan.choice[layer.name]
        for d in costs[layer.name]:
            if d.split(":")[2].split("/")[0] != chosen.split(":")[2].split("/")[0] and not d.endswith("/reference"):
                return layer.name, d
    raise AssertionError("no layer has a routine of another layout")


def test_views_show_the_session(bench):
    s = bench.session
    hm = bench.heatmap.figure.data[0]
    assert list(hm.y) == [l.name for l in s.graph]
    for x, y in zip(bench.heatmap.figure.data[1].x, bench.heatmap.figure.data[1].y):
        assert s.plan.choice[y] == x
    rec = s.profiled.routine[hm.y[0]]
    j = list(hm.x).index(next(iter(rec)))
    assert 10 ** hm.z[0][j] == pytest.approx(max(rec[hm.x[j]].median * 1e3, 1e-4))
    for layer in s.graph:
        assert f'data-layer="{layer.name}"' in bench.plan_table.widget.value
        assert s.plan.choice[layer.name] in bench.plan_table.widget.value
    assert f"{s.plan.cost * 1e3:.3f} ms" in bench.summary.headline.value
    assert sum(bench.summary.bars.data[0].y) + sum(bench.summary.bars.data[1].y) == pytest.approx(s.plan.cost * 1e3)
    assert set(bench.controls.routine.options) == {r.descriptor for r in routines.applicable(s.graph, s.graph.layer(bench.selected))}


def test_heatmap_click_pins_and_retune_updates_every_view(bench):
    s = bench.session
    layer, routine = other_layout_routine(s)
    bench.select(layer)
    before = snapshot(bench)
    optimal, optimal_cost = dict(s.plan.choice), s.plan.cost
    bench.heatmap.click(layer, routine)
    assert s.pins == {layer: routine}
    assert (routine, layer) in snapshot(bench)["heatmap_pinned"]
    assert "Retune to apply" in bench.controls.status.value
    bench.controls.buttons["retune"].click()
    assert s.plan.choice[layer] == routine
    after = snapshot(bench)
    changed = {k for k in before if before[k] != after[k]}
    assert changed == set(before), f"views that did not update: {set(before) - changed}"
    row = bench.plan_table.widget.value.split(f'data-layer="{layer}"')[1].split("</tr>")[0]
    assert routine in row and "pinned" in row
    assert s.plan.cost >= optimal_cost   # a pin can only cost
    # the DP table of the pinned layer has only the pinned routine's format
    assert bench.dp.table.value.count("<tr") == 2 and routine in bench.dp.table.value
    bench.controls.buttons["unpin"].click()
    bench.controls.buttons["retune"].click()
    assert s.pins == {} and s.plan.choice == optimal


def test_controls_pin_unpin_and_errors(bench):
    s = bench.session
    layer, routine = other_layout_routine(s)
    bench.controls.layer.value = layer
    assert bench.selected == layer
    bench.controls.routine.value = routine
    bench.controls.buttons["pin"].click()
    assert s.pins == {layer: routine}
    bench.controls.buttons["unpin"].click()
    assert s.pins == {}
    # a routine that does not apply: the status says so, nothing is pinned, nothing raises
    wrong = next(d for _, d, r in routines.all_routines() if d not in bench.controls.routine.options
                 and s.graph.layer(layer).op in (r.op if isinstance(r.op, tuple) else (r.op,)))
    bench.act(bench.pin, layer, wrong)
    assert s.pins == {} and "PinError" in bench.controls.status.value and layer in bench.controls.status.value
    hm = bench.heatmap.figure.data[0]
    i = list(hm.y).index(layer)
    blank = next(x for j, x in enumerate(hm.x) if not np.isfinite(hm.z[i][j]))
    bench.act(bench.heatmap.click, layer, blank)
    assert s.pins == {} and "does not apply" in bench.controls.status.value
    with pytest.raises(workbench.WorkbenchError):
        bench.pin(layer, wrong)   # from Python, the Session's error itself


def test_filters_reprofile_measure_export(bench):
    s = bench.session
    bench.controls.filters.value = "cpu:float32:nchw/*"
    bench.controls.buttons["filters"].click()
    assert s.filters == ["cpu:float32:nchw/*"]
    assert all(":nchw/" in d for d in s.plan.choice.values())
    assert all(":nchw/" in d for d in bench.heatmap.figure.data[1].x)
    bench.controls.filters.value = ""
    bench.controls.buttons["filters"].click()
    assert s.filters == [] and any(":nhwc/" in d for d in s.plan.choice.values())

    layer, other = bench.selected, list(s.graph)[7].name

    def samples(name):
        return {r.descriptor: s.profiled.routine[name][r.descriptor].samples
                for r in profile.candidates(s.graph, s.graph.layer(name))}
    old, old_other = samples(layer), samples(other)
    bench.controls.buttons["reprofile"].click()   # the field empty: the selected layer
    assert all(s.profiled.routine[layer][d].samples != old[d] for d in old)   # measured again
    assert samples(other) == old_other                                        # from the database
    bench.controls.reprofile_layers.value = "7"
    bench.controls.buttons["reprofile"].click()
    assert all(samples(other)[d] != old_other[d] for d in old_other)

    bench.controls.runs.value = 5
    bench.controls.buttons["measure"].click()
    assert s.measured is not None and len(s.measured.samples) == 5
    assert f"{s.measured.median * 1e3:.3f} ms" in bench.summary.headline.value

    bench.controls.buttons["export"].click()
    assert "exported" in bench.controls.status.value
    loaded = workbench.load(bench.export_path)
    assert loaded.assignment == s.assignment
    feeds = s.random_inputs()
    ours, theirs = s.run(feeds), loaded.run(feeds)
    assert all(np.array_equal(ours[k], theirs[k]) for k in ours)
    # the loaded file in a workbench: its plan kept, profiled for the heatmap, no DP table
    loaded._db = s.db
    again = Workbench(loaded)
    assert loaded.assignment == s.assignment and loaded.profiled is not None
    assert all(s.plan.choice[y] == x for x, y in zip(again.heatmap.figure.data[1].x, again.heatmap.figure.data[1].y))
    assert "no DP table" in again.dp.title.value


def test_compare_button_fills_the_summary(bench):
    pytest.importorskip("onnxruntime")
    bench.controls.runs.value = 2
    bench.controls.buttons["compare"].click()
    c = bench.session.comparison
    assert c is not None and "onnxruntime" in c.measured_ms
    assert f"{c.measured_ms['onnxruntime']:.4f}"[:5] in bench.summary.table.value
    assert "measured side by side" in bench.summary.headline.value
