"""Plain-text exports of a session: the profile as JSON lines, a Chrome trace of one inference,
the per-layer CSV.  Each is parsed back and checked against the session it came from."""
import csv
import json

import pytest

from workbench.ir.formats import Format
from workbench.ui import exports
from workbench import zoo
from workbench.session import NotTunedError, Session


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """'tiny', tuned with res.conv1 alone in NHWC so the plan has adapts."""
    s = Session.from_onnx(zoo.build("tiny"), num_threads=2, db=tmp_path_factory.mktemp("db") / "p.sqlite")
    s.profile(repeats=2)
    s.tune(filters=["cpu:float32:nchw/*", "cpu:float32:nhwc/im2col@res.conv1"])
    assert s.plan.adapts
    return s


def test_profile_jsonl(session, tmp_path):
    path = session.export_profile(tmp_path / "profile.jsonl")
    text = path.read_text()
    assert text.endswith("\n")
    lines = [json.loads(line) for line in text.splitlines()]
    prof = session.profiled
    routine_lines = [x for x in lines if x["kind"] == "routine"]
    adapt_lines = [x for x in lines if x["kind"] == "adapt"]
    assert len(routine_lines) + len(adapt_lines) == len(lines)
    # one line per (layer, routine) record, every one of them
    assert len(routine_lines) == sum(len(v) for v in prof.routine.values())
    assert {(x["layer"], x["routine"]) for x in routine_lines} == {
        (layer, d) for layer, recs in prof.routine.items() for d in recs}
    names = [l.name for l in session.graph]
    for x in routine_lines:
        rec = prof.routine[x["layer"]][x["routine"]]
        assert x["median_s"] == rec.median and x["spread_s"] == rec.spread
        assert x["samples_s"] == list(rec.samples) and x["signature"] == rec.signature
        assert names[x["index"]] == x["layer"] and session.graph.layer(x["layer"]).op == x["op"]
        assert x["threads"] == 2
    # layers appear in graph order
    assert [x["index"] for x in routine_lines] == sorted(x["index"] for x in routine_lines)
    # one line per adapt record
    assert len(adapt_lines) == len(prof.adapt) > 0
    for x in adapt_lines:
        rec = prof.adapt[(x["tensor"], Format.parse(x["from"]), Format.parse(x["to"]))]
        assert x["median_s"] == rec.median and x["adapt"] == rec.name and x["samples_s"] == list(rec.samples)
    # the pure function gives the same text
    assert exports.profile_jsonl(session.graph, prof) == text


def test_chrome_trace(session, tmp_path):
    path = session.export_trace(tmp_path / "trace.json")
    trace = json.loads(path.read_text())
    events = trace["traceEvents"]
    complete = [e for e in events if e["ph"] == "X"]
    steps = session.compile().steps
    assert [e["name"] for e in complete] == [st.name for st in steps]
    assert sum(e["cat"] == "adapt" for e in complete) == len(session.compile().adapts) > 0
    end = 0.0
    for e, st in zip(complete, steps):
        assert e["ts"] >= 0 and e["dur"] >= 0
        assert e["ts"] >= end - 1e-3   # steps run one after another
        end = e["ts"] + e["dur"]
        assert e["cat"] == st.kind and e["pid"] == 1 and e["tid"] == 1
        if st.kind == "layer":
            assert e["args"]["routine"] == session.plan.choice[st.name] and e["args"]["op"] == st.layer.op
        else:
            assert e["args"]["adapt"] == st.what
    meta = [e for e in events if e["ph"] == "M"]
    assert {e["name"] for e in meta} == {"process_name", "thread_name"}
    assert "tiny" in json.dumps(meta)


def test_chrome_trace_of_given_times():
    class Step:
        def __init__(self, name, kind, what):
            self.name, self.kind, self.what, self.layer = name, kind, what, None
    times = [(Step("a", "layer", "cpu:float32:nchw/im2col"), 0.0, 1.5e-3),
             (Step("adapt:t:nchw->nhwc", "adapt", "float32:nchw->nhwc"), 1.5e-3, 2e-4)]
    trace = json.loads(exports.chrome_trace(times, "m", 4))
    x = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert [(e["name"], e["ts"], e["dur"]) for e in x] == [("a", 0.0, 1500.0), ("adapt:t:nchw->nhwc", 1500.0, 200.0)]
    assert "4 threads" in json.dumps(trace)


def test_layer_csv(session, tmp_path):
    path = session.export_csv(tmp_path / "layers.csv")
    rows = list(csv.DictReader(path.read_text().splitlines()))
    assert list(rows[0]) == exports.CSV_FIELDS
    assert [r["name"] for r in rows] == [l.name for l in session.graph]
    costs, _ = session.costs()
    for i, r in enumerate(rows):
        assert int(r["index"]) == i
        assert r["routine"] == session.plan.choice[r["name"]]
        assert r["op"] == session.graph.layer(r["name"]).op
        assert float(r["profiled_ms"]) == pytest.approx(costs[r["name"]][r["routine"]] * 1e3, abs=1e-4)
        assert float(r["measured_ms"]) >= 0
        assert int(r["candidates"]) == len(costs[r["name"]])
        assert r["pinned"] == "0"
    adapts = {a for r in rows for a in r["adapts_in"].split(";") if a}
    assert adapts == {st.name for st in session.compile().adapts}
    # res.conv1 (forced to NHWC) reads its input through an adapt
    assert next(r for r in rows if r["name"] == "res.conv1")["adapts_in"].startswith("adapt:")


def test_exports_need_a_profile_or_plan(tmp_path):
    s = Session.from_onnx(zoo.build("tiny"), num_threads=2, db=tmp_path / "p.sqlite")
    for call in (s.export_profile, s.export_trace, s.export_csv):
        with pytest.raises(NotTunedError):
            call(tmp_path / "x")
    assert not (tmp_path / "x").exists()
