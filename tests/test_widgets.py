"""workbench.ui.widgets, at the level of their traits: what each view holds after each action, checked
against the Session (which the views only draw) and against files the actions write."""
import json

import numpy as np
import pytest

import workbench
from workbench import Session, routines, zoo
from workbench.tuning import profiler as profile
from workbench.ui import views
from workbench.ui.widgets import Workbench, plan
from workbench.ui.widgets.html import cell


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
                plan_table=b.plan_table.html.value,
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
    for i, layer in enumerate(hm.y):   # blank exactly where the routine was not profiled
        assert [z is not None for z in hm.z[i]] == [d in s.profiled.routine[layer] for d in hm.x]
    for layer in s.graph:
        assert f'data-layer="{layer.name}"' in bench.plan_table.html.value
        assert s.plan.choice[layer.name] in bench.plan_table.html.value
    assert f"{s.plan.cost * 1e3:.3f} ms" in bench.summary.headline.value
    assert sum(bench.summary.bars.data[0].y) + sum(bench.summary.bars.data[1].y) == pytest.approx(s.plan.cost * 1e3)
    assert set(bench.controls.routine.options) == {r.descriptor for r in routines.applicable(s.graph, s.graph.layer(bench.selected), None)}


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
    row = bench.plan_table.html.value.split(f'data-layer="{layer}"')[1].split("</tr>")[0]
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
    blank = next(x for j, x in enumerate(hm.x) if hm.z[i][j] is None)
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
    # Bit for bit on the same threads: Measure's runs may have had the thread governor move the
    # session to one thread fewer while the tests' other worker held a core.
    s.compile().governor = loaded.compile().governor = None
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
    from workbench.ui.widgets.html import cell   # the table's own rounding (13.625 shows as 13.63)
    assert f"<td>{cell(float(c.measured_ms['onnxruntime']))}</td>" in bench.summary.table.value
    assert "measured side by side" in bench.summary.headline.value


def plotly_json(figure):
    """The figure as the kernel sends it, refusing NaN and infinities as JSON does."""
    return json.dumps(figure.to_plotly_json(), allow_nan=False,
                      default=lambda o: o.tolist() if isinstance(o, (np.ndarray, np.generic)) else str(o))


def figures(b):
    return [b.heatmap.figure, b.plan_graph.figure, b.summary.bars]


def test_one_statistic_in_headline_measure_and_compare(bench):
    """Measure and Compare report the median and IQR of their interleaved runs, with the run
    count; the headline shows the same figure, and after Compare it is the tuned plan's figure
    from Compare's own rounds."""
    s = bench.session
    assert "not yet (Measure or Compare)" in bench.summary.headline.value
    bench.controls.runs.value = 7
    bench.controls.buttons["measure"].click()
    median, (q1, q3) = np.median(s.measured.samples) * 1e3, np.percentile(s.measured.samples, [25, 75]) * 1e3
    assert len(s.measured.samples) == 7
    for shown in (bench.summary.headline.value, bench.controls.status.value):
        assert f"{median:.3f} ms (IQR {q3 - q1:.3f}, 7 runs" in shown
    tuned_row = bench.summary.table.value.split('data-layer="tuned"')[1].split("</tr>")[0]
    assert f"<td>{cell(median)}</td>" in tuned_row and "<td>7</td>" in tuned_row

    pytest.importorskip("onnxruntime")
    bench.controls.runs.value = 3
    bench.controls.buttons["compare"].click()
    c = s.comparison
    tuned = np.median(c.latency["tuned"].samples) * 1e3
    assert c.measured_ms["tuned"] == pytest.approx(tuned) and s.measured is c.latency["tuned"]
    assert f"{tuned:.3f} ms (IQR" in bench.summary.headline.value and "3 runs" in bench.summary.headline.value
    assert "interleaved with greedy, onnxruntime and" in bench.summary.headline.value
    assert f"{tuned:.3f} ms" in bench.controls.status.value and "not yet" not in bench.summary.headline.value
    tuned_row = bench.summary.table.value.split('data-layer="tuned"')[1].split("</tr>")[0]
    assert f"<td>{cell(tuned)}</td>" in tuned_row and "<td>3</td>" in tuned_row


def test_busy_while_an_action_runs(bench, monkeypatch):
    """During Measure and Compare every button is disabled, the workbench has the class wb-busy
    and the status says what is measured; all restored afterwards, also when the action fails."""
    s = bench.session
    seen = []

    def recording(method):
        def run(*args, **kwargs):
            seen.append(dict(disabled=[b.disabled for b in bench.controls.buttons.values()],
                             busy="wb-busy" in bench._dom_classes, status=bench.controls.status.value))
            return method(*args, **kwargs)
        return run
    monkeypatch.setattr(s, "measure", recording(s.measure))
    bench.controls.runs.value = 2
    bench.controls.buttons["measure"].click()
    assert seen[-1]["disabled"] == [True] * len(bench.controls.buttons) and seen[-1]["busy"]
    assert "measuring: the tuned plan, 2 rounds" in seen[-1]["status"]
    assert not any(b.disabled for b in bench.controls.buttons.values()) and "wb-busy" not in bench._dom_classes

    def fails(*args, **kwargs):
        recording(lambda: None)()
        raise workbench.WorkbenchError("the machine is on fire")
    monkeypatch.setattr(s, "compare", fails)
    bench.controls.buttons["compare"].click()
    assert seen[-1]["busy"] and all(seen[-1]["disabled"])
    assert "measuring: tuned, greedy, " in seen[-1]["status"] and f"{len(s.family_plans())} families" in seen[-1]["status"]
    assert "the machine is on fire" in bench.controls.status.value
    assert not any(b.disabled for b in bench.controls.buttons.values()) and "wb-busy" not in bench._dom_classes


def test_reprofile_says_what_it_measured(bench):
    s = bench.session
    names = [l.name for l in s.graph][3:5]
    bench.controls.reprofile_layers.value = "3, 4"
    bench.controls.buttons["reprofile"].click()
    records = sum(len(s.profiled.routine[n]) for n in names)
    status = bench.controls.status.value
    assert f"reprofiled 2 layer(s) ({names[0]}, {names[1]}): {records} routine records" in status
    assert f"in {s.profile_s:.2f} s" in status and "retuned" in status


def test_plan_table_sorts_and_shows_the_runner_up(bench):
    s = bench.session
    costs, _ = s.costs()
    ms = {n: costs[n][s.plan.choice[n]] for n in costs}
    index = {l.name: i for i, l in enumerate(s.graph)}

    def order():
        return [part.split('"')[0] for part in bench.plan_table.html.value.split('data-layer="')[1:]]
    assert order() == [l.name for l in s.graph]
    bench.plan_table.sort.value = "routine ms"
    assert order() == sorted(ms, key=lambda n: (-ms[n], index[n]))
    bench.plan_table.sort.value = "op"
    assert order() == sorted(ms, key=lambda n: (s.graph.layer(n).op, index[n]))
    costs, _ = s.costs()   # as the table was last drawn
    for name in list(costs)[:12]:
        others = {d: c for d, c in costs[name].items() if d != s.plan.choice[name]}
        row = bench.plan_table.html.value.split(f'data-layer="{name}"')[1].split("</tr>")[0]
        if others:
            best = min(others, key=lambda d: (others[d], d))
            assert f"<td>{best}</td>" in row and f"<td>{cell(others[best] * 1e3)}</td>" in row


def test_heatmap_relative_toggle_order_and_op_filter(bench):
    s = bench.session
    hm = bench.heatmap.figure.data[0]
    bench.heatmap.colour.value = "relative"
    for i, layer in enumerate(hm.y):
        recs = s.profiled.routine[layer]
        values = {d: max(r.median * 1e3, 1e-4) for d, r in recs.items()}
        ratios = [10 ** z for z in hm.z[i] if z is not None]
        assert min(ratios) == pytest.approx(1.0, abs=1e-12)
        for j, d in enumerate(hm.x):
            if d in recs:
                assert 10 ** hm.z[i][j] == pytest.approx(values[d] / min(values.values()), rel=1e-9)
    assert "fastest" in bench.heatmap.caption.value
    assert bench.heatmap.figure.layout.xaxis.title.text.startswith("routine")
    bench.heatmap.order.value = "slowest first"
    costs, _ = s.costs()
    chosen = [costs[n][s.plan.choice[n]] for n in hm.y]
    assert chosen == sorted(chosen, reverse=True) and set(hm.y) == set(costs)
    bench.heatmap.op.value = "Conv"
    assert set(hm.y) == {l.name for l in s.graph if l.op == "Conv"}
    assert {y for y in bench.heatmap.figure.data[1].y} <= set(hm.y)   # no marker on a hidden row
    assert bench.heatmap.figure.layout.height < 170 + 14 * len(s.graph)
    bench.heatmap.colour.value = "absolute"
    bench.heatmap.op.value = ""
    assert len(hm.y) == len(s.graph)


def test_figures_are_json_and_fit(bench):
    """No NaN reaches plotly's JSON (the heatmap's blank cells are None), every figure sizes
    itself to the notebook's width, the tall ones scroll in a pane of fixed height."""
    assert any(z is None for row in bench.heatmap.figure.data[0].z for z in row)
    for colour in ("absolute", "relative"):
        bench.heatmap.colour.value = colour
        for figure in figures(bench):
            plotly_json(figure)
    for figure in figures(bench):
        assert figure.layout.width is None   # autosized to the output area
    assert bench.heatmap.pane.layout.max_height == "600px" and bench.heatmap.pane.layout.overflow == "auto"
    assert bench.plan_graph.pane.layout.max_height == "700px"
    # the graph's nodes carry their labels, and a long chain wraps into bands of WRAP columns
    labelled = [t for t in bench.plan_graph.figure.data if t.mode == "markers+text"]
    labels = [x for t in labelled for x in t.text]
    assert len(labels) == len(bench.session.graph) + len(bench.session.graph.inputs) + len(bench.session.graph.outputs)
    assert max(x for t in labelled for x in t.x) < plan.WRAP
    # the bar chart is labelled by layer, its hover names op and routine
    s = bench.session
    bars = bench.summary.bars.data[0]
    assert list(bars.x) == [l.name for l in s.graph]
    for name, hover in zip(bars.x, bars.customdata):
        assert s.graph.layer(name).op in hover and s.plan.choice[name] in hover


def test_summary_shows_op_breakdown_and_top_layers(bench):
    s = bench.session
    times = views.layer_times(s)
    ops = {l.name: l.op for l in s.graph}
    conv = sum(r + a for n, r, a in times if ops[n] == "Conv")
    row = bench.summary.ops.value.split("<td>Conv</td>")[1].split("</tr>")[0]
    assert f"<td>{sum(ops[n] == 'Conv' for n, _, _ in times)}</td>" in row and f"<td>{cell(conv)}</td>" in row
    slowest = max(times, key=lambda t: t[1] + t[2])[0]
    first = bench.summary.top.value.split('data-layer="')[1].split('"')[0]
    assert first == slowest and bench.summary.top.value.count("data-layer=") == 10


def test_precision_control_tunes_with_bfloat16_and_the_headline_shows_the_error(bench):
    from workbench.runtime import cpu
    s = bench.session
    assert "precision: float32 throughout" in bench.summary.headline.value
    assert bench.controls.precision.value == "float32"
    bench.controls.precision.value = "float32,bfloat16"
    bench.controls.buttons["precision"].click()
    assert s.precisions == ("float32", "bfloat16")
    assert "precision float32, bfloat16" in bench.controls.status.value
    if cpu.kernel_module("gemm_bf16", "avx512bf16") is None:
        assert s.low_precision == []   # nothing to choose from on this CPU
        return
    # Pinned onto a bfloat16 routine, and a reader of its output onto a float32 one, the plan has
    # a bfloat16 layer and a cast between them (with the bfloat16 routines there are now, a
    # plan may otherwise run bfloat16 from the first layer's float32-input form to the last
    # layer's float32-output one with no cast adapt), and every view says so.
    def float32_routine(l):
        return next((d for d, r in routines.routines_for(l.op).items() if d.startswith("cpu:float32:")
                     and r.available() and r.applies(l, s.graph.input_specs(l))), None)
    layer, reader = next((l, c) for l in s.graph
                         if "cpu:bfloat16:nhwc/gemm1x1_bf16" in routines.routines_for(l.op)
                         and routines.get(l.op, "cpu:bfloat16:nhwc/gemm1x1_bf16").applies(l, s.graph.input_specs(l))
                         for c in s.graph.consumers(l.outputs[0]) if float32_routine(c) is not None)
    bench.act(bench.pin, layer.name, "cpu:bfloat16:nhwc/gemm1x1_bf16")
    bench.act(bench.pin, reader.name, float32_routine(reader))
    bench.act(bench.retune)
    assert s.low_precision == ["bfloat16"]
    head = bench.summary.headline.value
    assert "in bfloat16; vs float32: max abs error" in head and "cosine" in head
    assert f"{s.precision.cosine:.6f}" in head
    casts = [(t, a, b) for t, a, b in s.plan.adapts if a.dtype != b.dtype]
    assert casts
    assert "bfloat16" in bench.plan_table.html.value
    assert any("bfloat16" in (t.name or "") for t in bench.plan_graph.figure.data)


def test_max_error_field_sets_the_error_budget_and_refuses_what_is_not_a_number(bench):
    s = bench.session
    bench.controls.precision.value = "float32,bfloat16"
    bench.controls.max_error.value = "a lot"
    bench.controls.buttons["precision"].click()
    assert "max error: expected a number" in bench.controls.status.value and s.max_error is None
    bench.controls.max_error.value = "0"
    bench.controls.buttons["precision"].click()
    assert s.max_error == 0.0
    if s.budget is not None:   # the fastest plan had bfloat16 layers: float32 itself is not 0 off
        assert s.low_precision == [] and "error budget max error 0: MISSED" in bench.summary.headline.value
    bench.controls.max_error.value = ""
    bench.controls.buttons["precision"].click()
    assert s.max_error is None and s.budget is None

