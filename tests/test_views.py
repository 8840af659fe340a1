"""workbench.views: what the workbench draws, checked against the profile, the plan and the graph."""
import math

import networkx as nx
import numpy as np
import pytest

from workbench import Session, routines, search, views, zoo


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


def test_layer_times_add_up_to_the_prediction(session):
    times = views.layer_times(session)
    assert sum(r + a for _, r, a in times) == pytest.approx(session.plan.cost * 1e3, rel=1e-9)


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
    session.retune()
    assert session.comparison is None   # a new plan: the old measurements no longer describe it
