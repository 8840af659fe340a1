"""workbench.ui.views: what the workbench draws, checked against the profile, the plan and the graph."""
import math

import networkx as nx
import numpy as np
import pytest

from workbench import Session, routines, zoo
from workbench.tuning import search
from workbench.ui import views
from workbench.ui.views.base import FLOOR_MS


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    s = Session.from_onnx(zoo.build("mobilenet_v2", resolution=32), num_threads=2,
                          db=tmp_path_factory.mktemp("views") / "profiles.sqlite")
    s.tune()
    return s


def test_heatmap_is_the_profile(session):
    hm = views.heatmap(session)
    assert hm.layers == [l.name for l in session.graph]
    for i, layer in enumerate(session.graph):
        recs = session.profiled.routine[layer.name]
        applicable = {r.descriptor for r in routines.applicable(session.graph, layer)}
        for j, d in enumerate(hm.routines):
            if d in recs:
                assert hm.ms[i, j] == pytest.approx(recs[d].median * 1e3)
                assert hm.spread_ms[i, j] == pytest.approx(recs[d].spread * 1e3)
                assert d in applicable and layer.name in hm.hover[i][j] and d in hm.hover[i][j]
            else:
                assert math.isnan(hm.ms[i, j]) and hm.hover[i][j] == ""
        assert hm.routines[hm.chosen[i]] == session.plan.choice[layer.name]
        assert hm.pinned[i] is None   # no pins in this session


def test_dp_table_closes_to_the_plan_cost(session):
    """The last layer's cheapest entry, plus the adapt of the output to its fixed format, is
    the optimum (a chain's last layer writes the graph output)."""
    plan, prob = session.plan, session.problem(session.allowed())
    last = list(session.graph)[-1]
    out = last.outputs[0]
    best = min(e.cost + prob.adapt(out, fmt, prob.output_formats[out]) for fmt, e in plan.table[last.name].items())
    assert best == pytest.approx(plan.cost, rel=1e-12)
    rows = views.dp_table(session, last.name)
    assert [r["cost_ms"] for r in rows] == sorted(r["cost_ms"] for r in rows)
    assert sum(r["in_plan"] for r in rows) == 1
    # cost to here only grows along the topological order
    for a, b in zip(session.graph, list(session.graph)[1:]):
        assert min(e.cost for e in plan.table[b.name].values()) >= min(e.cost for e in plan.table[a.name].values())


def test_dp_path_runs_through_the_ancestors(session):
    dg = nx.DiGraph(session.graph.edges)
    last = list(session.graph)[-1].name
    path = views.dp_path(session, last)
    names = [n for n, _ in path]
    assert names[-1] == last
    assert set(names) == nx.ancestors(dg, last) | {last}   # every ancestor: residual branches included
    mid = list(session.graph)[10].name
    assert {n for n, _ in views.dp_path(session, mid)} == nx.ancestors(dg, mid) | {mid}


def test_plan_rows_and_graph_drawing(session):
    rows = views.plan_rows(session)
    assert [r["routine"] for r in rows] == [session.plan.choice[l.name] for l in session.graph]
    costs, _ = session.costs()
    for r in rows:
        assert r["ms"] == pytest.approx(costs[r["name"]][r["routine"]] * 1e3)
        assert r["decision"] == "chosen"
    d = views.graph_drawing(session)
    assert d.x == d.depth and d.wrap == 0
    dg = nx.DiGraph(session.graph.edges)
    io = {(f"input:{t}", l.name) for t in session.graph.inputs for l in session.graph.consumers(t)} | \
         {(session.graph.producer(t).name, f"output:{t}") for t in session.graph.outputs}
    assert {(p, c) for p, c, _ in d.edges} == set(dg.edges) | io
    assert d.nodes == [f"input:{t}" for t in session.graph.inputs] + [l.name for l in session.graph] + \
        [f"output:{t}" for t in session.graph.outputs]
    for p, c, _ in d.edges:   # a layer sits right of every layer it reads
        assert d.x[d.nodes.index(c)] > d.x[d.nodes.index(p)]
    assert len({(x, y) for x, y in zip(d.x, d.y)}) == len(d.nodes)   # no two nodes on one spot
    # every adapt of the plan is drawn, once per reader that wants that format
    drawn = {(label.split(":")[0], label.split(" ")[1]) for _, _, label, _ in d.adapts}
    assert drawn == {(t, f"{s}->{f}") for t, s, f in session.plan.adapts}
    for (p, c, _, _) in d.adapts:
        xs, ys = d.edge_path(p, c)
        assert (xs[0], ys[0]) == (d.x[d.nodes.index(p)], d.y[d.nodes.index(p)])
        assert (xs[-1], ys[-1]) == (d.x[d.nodes.index(c)], d.y[d.nodes.index(c)])


def test_graph_drawing_wraps_long_chains_into_a_serpentine(session):
    flat, wrap = views.graph_drawing(session), 7
    d = views.graph_drawing(session, wrap=wrap)
    assert max(flat.depth) > 3 * wrap                      # the model is long enough to wrap
    assert d.nodes == flat.nodes and d.depth == flat.depth and d.edges == flat.edges
    assert set(d.x) == set(range(wrap))
    assert len({(x, y) for x, y in zip(d.x, d.y)}) == len(d.nodes)
    for i, depth in enumerate(d.depth):
        band, col = divmod(depth, wrap)
        assert d.x[i] == (wrap - 1 - col if band % 2 else col)   # every other band runs right to left
    band_y = {}
    for i in range(len(d.nodes)):
        band_y.setdefault(d.band(i), []).append(d.y[i])
    for b in range(1, len(band_y)):                        # each band lies wholly below the one above
        assert max(band_y[b]) < min(band_y[b - 1])
    for p, c, _ in d.edges:                                # a chain continues right below the band's end
        i, j = d.nodes.index(p), d.nodes.index(c)
        if d.depth[j] == d.depth[i] + 1 and d.depth[j] % wrap == 0:
            assert d.x[i] == d.x[j]
    ops = {l.name: l.op for l in session.graph}
    for name, label in zip(d.nodes, d.labels):
        if name in ops:
            assert label.startswith(views.graph.SHORT_OPS.get(ops[name], ops[name][:8]))
            assert len(label.split("<br>")[-1]) <= views.graph.LABEL_CHARS


def test_node_labels():
    assert views.node_label("p2o.Conv.12", "Conv", "p2o.") == "Conv<br>12"
    assert views.node_label("p2o.GlobalAveragePool.14", "GlobalAveragePool", "p2o.") == "GAP<br>14"
    assert views.node_label("features.2.conv.1", "Conv") == "Conv<br>…2.conv.1"
    assert views.graph._name_prefix(["p2o.Conv.0", "p2o.Add.1"]) == "p2o."
    assert views.graph._name_prefix(["features.0", "classifier.1"]) == ""


def test_layer_times_add_up_to_the_prediction(session):
    times = views.layer_times(session)
    assert sum(r + a for _, r, a in times) == pytest.approx(session.plan.cost * 1e3, rel=1e-9)


def test_heatmap_orders_and_filters_rows(session):
    costs, _ = session.costs()
    chosen_ms = {l.name: costs[l.name][session.plan.choice[l.name]] for l in session.graph}
    index = {l.name: i for i, l in enumerate(session.graph)}
    slow = views.heatmap(session, order="slowest first")
    assert slow.layers == sorted(chosen_ms, key=lambda n: (-chosen_ms[n], index[n]))
    full = views.heatmap(session)
    for i, name in enumerate(slow.layers):   # the rows moved whole
        k = full.layers.index(name)
        assert np.array_equal(slow.ms[i], full.ms[k], equal_nan=True) and slow.hover[i] == full.hover[k]
        assert slow.chosen[i] == full.chosen[k] and slow.ops[i] == full.ops[k]
    conv = views.heatmap(session, op="Conv")
    assert conv.layers == [l.name for l in session.graph if l.op == "Conv"] and conv.routines == full.routines
    assert 0 < len(conv.layers) < len(full.layers)
    with pytest.raises(ValueError, match="slowest first"):
        views.heatmap(session, order="fastest")


def test_heatmap_relative_to_each_rows_fastest(session):
    hm = views.heatmap(session)
    ratio = hm.relative()
    for i, layer in enumerate(session.graph):
        recs = session.profiled.routine[layer.name]
        fastest = min(max(r.median * 1e3, FLOOR_MS) for r in recs.values())
        for j, d in enumerate(hm.routines):
            if d in recs:
                assert ratio[i, j] == pytest.approx(max(recs[d].median * 1e3, FLOOR_MS) / fastest, rel=1e-12)
            else:
                assert math.isnan(ratio[i, j])
        assert np.nanmin(ratio[i]) == 1.0
    assert np.nanmax(ratio) > 2   # some routine is far off its layer's best: the view has something to show


def test_plan_rows_runner_up_and_what_switching_costs(session):
    """The runner-up is the fastest other profiled routine; switching one layer to it changes the
    plan's cost by exactly the routine and adapt deltas the table shows (checked by pricing the
    whole switched plan with search.evaluate); the plan is optimal, so no switch gains."""
    costs, _ = session.costs()
    prob = session.problem()
    base, _ = search.evaluate(prob, session.plan.choice)
    rows = views.plan_rows(session)
    adapted = 0
    for r in rows:
        chosen = session.plan.choice[r["name"]]
        others = {d: c for d, c in costs[r["name"]].items() if d != chosen}
        if not others:
            assert r["runner_up"] is None and r["switch_ms"] is None
            continue
        best = min(others, key=lambda d: (others[d], d))
        assert r["runner_up"] == best and r["runner_up_ms"] == pytest.approx(others[best] * 1e3)
        assert r["routine_delta_ms"] == pytest.approx((others[best] - costs[r["name"]][chosen]) * 1e3)
        switched, _ = search.evaluate(prob, {**session.plan.choice, r["name"]: best})
        assert r["switch_ms"] == pytest.approx((switched - base) * 1e3, rel=1e-9, abs=1e-12)
        assert r["switch_ms"] >= -1e-12
        adapted += abs(r["adapt_delta_ms"]) > 1e-9
    assert adapted >= 3   # runner-ups in another layout: the adapt column explains something


def test_plan_rows_sort(session):
    rows = views.plan_rows(session)
    costs, _ = session.costs()
    adapt = {n: a for n, _, a in views.layer_times(session)}
    ms = {n: costs[n][session.plan.choice[n]] * 1e3 for n in costs}
    index = {l.name: i for i, l in enumerate(session.graph)}
    expected = {
        "layer order": [l.name for l in session.graph],
        "routine ms": sorted(ms, key=lambda n: (-ms[n], index[n])),
        "slowest (routine + adapts)": sorted(ms, key=lambda n: (-(ms[n] + adapt[n]), index[n])),
        "adapt ms": sorted(ms, key=lambda n: (-adapt[n], index[n])),
        "op": sorted(ms, key=lambda n: (session.graph.layer(n).op, index[n])),
    }
    assert set(expected) | {"closest runner-up"} == set(views.PLAN_SORTS)
    for by, names in expected.items():
        assert [r["name"] for r in views.plan_rows(session, sort=by)] == names, by
    closest = views.sort_plan_rows(rows, "closest runner-up")
    margins = [r["switch_ms"] for r in closest if r["switch_ms"] is not None]
    assert margins == sorted(margins) and all(r["switch_ms"] is None for r in closest[len(margins):])
    with pytest.raises(ValueError, match="layer order"):
        views.sort_plan_rows(rows, "by colour")


def test_op_breakdown_and_top_layers_add_up(session):
    times = views.layer_times(session)
    ops = {l.name: l.op for l in session.graph}
    rows = views.op_breakdown(session)
    by_op = {r["op"]: r for r in rows}
    assert set(by_op) == set(ops.values())
    for op, r in by_op.items():
        mine = [t for t in times if ops[t[0]] == op]
        assert r["layers"] == len(mine)
        assert r["routine_ms"] == pytest.approx(sum(t[1] for t in mine), rel=1e-12)
        assert r["adapt_ms"] == pytest.approx(sum(t[2] for t in mine), rel=1e-12, abs=1e-15)
        assert r["measured_ms"] is None and r["ort_ms"] is None   # not compared yet
    assert sum(r["total_ms"] for r in rows) == pytest.approx(session.plan.cost * 1e3, rel=1e-9)
    assert sum(r["percent"] for r in rows) == pytest.approx(100.0)
    assert [r["total_ms"] for r in rows] == sorted((r["total_ms"] for r in rows), reverse=True)
    top = views.top_layers(session, 10)
    totals = sorted((r + a for _, r, a in times), reverse=True)[:10]
    assert [t["total_ms"] for t in top] == pytest.approx(totals)
    assert all(t["total_ms"] == pytest.approx(t["ms"] + t["adapt_ms"]) for t in top)


def test_summary_rows_are_the_plans(session):
    s = views.summary(session)
    assert s["predicted_ms"] == pytest.approx(session.plan.cost * 1e3)
    by_name = {r["name"]: r for r in s["rows"]}
    families = session.family_plans()
    assert set(by_name) == {"tuned", "greedy", *families}
    prob = session.problem()
    for name, plan in families.items():
        cost, _ = search.evaluate(prob, plan.choice)
        assert by_name[name]["predicted_ms"] == pytest.approx(cost * 1e3)
        assert by_name[name]["speedup"] == pytest.approx(cost / session.plan.cost)
        assert by_name[name]["speedup"] >= 1 - 1e-12   # the DP's optimum is no worse than any family


def test_compare_measures_every_plan(session):
    pytest.importorskip("onnxruntime")   # the test extra installs it
    c = session.compare(runs=3)
    assert session.comparison is c
    assert set(c.measured_ms) == {"tuned", "greedy", "onnxruntime", *session.family_plans()}
    assert all(v > 0 and np.isfinite(v) for v in c.measured_ms.values())
    assert all(e < 1e-4 for e in c.error.values())
    rows = {r["name"]: r for r in views.summary(session)["rows"]}
    assert rows["onnxruntime"]["speedup"] == pytest.approx(c.measured_ms["onnxruntime"] / c.measured_ms["tuned"])
    # one statistic: the summary's tuned figure is the median of the tuned plan's samples of
    # Compare's own rounds, and the session's measured latency is that same one
    tuned = np.median(c.latency["tuned"].samples) * 1e3
    assert rows["tuned"]["measured_ms"] == pytest.approx(tuned) == views.latency(session)["median_ms"]
    assert rows["tuned"]["runs"] == 3 == views.latency(session)["runs"]
    q1, q3 = np.percentile(c.latency["tuned"].samples, [25, 75])
    assert views.latency(session)["spread_ms"] == pytest.approx((q3 - q1) * 1e3)
    assert "greedy" in views.latency(session)["text"] and f"{tuned:.3f} ms" in views.latency(session)["text"]
    ops = {r["op"]: r for r in views.op_breakdown(session)}
    for side, key in [("tuned", "measured_ms"), ("onnxruntime", "ort_ms")]:
        for op, value in getattr(c, "op_ms", {}).get(side, {}).items():
            assert ops[op][key] == pytest.approx(value)
    session.retune()
    assert session.comparison is None   # a new plan: the old measurements no longer describe it
