"""``workbench bench`` and :mod:`workbench.bench`: the report's figures against NumPy on the
recorded samples, per-op totals against the step times and the graph, ONNX Runtime's profile
parsing against a hand-made trace, the busy process, bad input, and Compare's per-op totals.
The zoo's tiny model at 32x32, 1 thread, a handful of runs; databases under tmp_path."""
import contextlib
import io
import json
import os
import re
import sys

import numpy as np
import pytest

from workbench import Session, zoo
from workbench import bench as bench_mod
from workbench.bench import load as load_mod
from workbench.bench import ops
from workbench.cli.main import main

pytest.importorskip("onnxruntime")   # the test extra installs it; every peer check needs it
FAST = ["--threads", "1", "--runs", "5", "--warmup", "1", "--idle", "5", "--idle-runs", "3", "--op-runs", "3"]


def _main_quiet(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _rows(text, title):
    """Cells of the printed table under the line starting with ``title`` (split on 2+ spaces)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    rows = []
    for line in lines[start + 3:]:   # title, headers, dashes
        if not line.strip():
            break
        rows.append(re.split(r"\s{2,}", line.strip()))
    return rows


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    model = d / "tiny.onnx"
    zoo.save("tiny", model, resolution=32)
    return {"dir": d, "model": model, "db": d / "profiles.sqlite"}


@pytest.fixture(scope="module")
def with_ort(files):
    prefix = files["dir"] / "reports" / "tiny_ort"
    code, out, err = _main_quiet(["bench", str(files["model"]), "--db", str(files["db"]), "--peers", "ort", *FAST,
                                  "-o", str(prefix)])
    assert code == 0, err
    return out, json.loads(prefix.with_suffix(".json").read_text()), prefix


@pytest.fixture(scope="module")
def session(files, with_ort):
    """The tiny model tuned through the fixture's database (every record reused)."""
    s = Session.from_onnx(str(files["model"]), num_threads=1, db=str(files["db"]))
    s.tune()
    return s


def test_report_prints_percentiles_and_per_op_totals_beside_ort(with_ort, session):
    out, report, prefix = with_ort
    latency = {r[0]: r for r in _rows(out, "latency (")}
    assert set(latency) == {"tuned", "onnxruntime"}
    for name, row in latency.items():
        q = report["engines"][name]["quiet"]
        assert [float(c) for c in row[1:6]] == pytest.approx(
            [q["p50_ms"], q["p90_ms"], q["p99_ms"], q["min_ms"], q["mean_ms"]], abs=6e-4)
    assert float(latency["onnxruntime"][-1]) < 1e-4   # ORT's outputs against ours
    per_op = {r[0]: r for r in _rows(out, "per-op-type totals")}
    graph_ops = set(session.graph.op_counts())
    assert graph_ops <= set(per_op) and "total" in per_op
    assert per_op["Conv"][3] == str(session.graph.op_counts()["Conv"])   # our layers
    assert per_op["Conv"][4] != "-"                                      # ORT's profiler saw its Convs
    assert "first run after 5 ms idle (3 repeats" in out
    assert "predicted vs measured (tuned)" in out
    assert f"wrote {prefix}.json" in out and f"wrote {prefix}.md" in out


def test_json_figures_are_the_samples_statistics(with_ort):
    _, report, _ = with_ort
    assert report["threads"] == 1 and report["batch"] == 1 and report["inputs"] == {"input": [1, 3, 32, 32]}
    assert report["method"].startswith("median of turns") and report["machine"]["fingerprint"]
    assert {"workbench", "onnxruntime", "numpy"} <= set(report["versions"])
    for name, e in report["engines"].items():
        q = e["quiet"]
        s = np.array(q["samples_ms"])
        assert len(s) == q["runs"] == 5
        for p in (50, 90, 99):
            assert q[f"p{p}_ms"] == pytest.approx(np.percentile(s, p), rel=1e-12)
        assert q["min_ms"] == pytest.approx(s.min()) and q["mean_ms"] == pytest.approx(s.mean())
        assert q["iqr_ms"] == pytest.approx(np.percentile(s, 75) - np.percentile(s, 25))
        assert q["throughput_per_s"] == pytest.approx(1 / (s.mean() / 1e3))
        idle = e["first_after_idle"]
        assert idle["median_ms"] == pytest.approx(np.median(idle["samples_ms"]))
        assert idle["max_ms"] == max(idle["samples_ms"]) and len(idle["samples_ms"]) == 3
        assert idle["vs_warm"] == pytest.approx(np.median(idle["samples_ms"]) / np.median(s))
    pred = report["predicted"]
    assert pred["predicted_over_measured"] == pytest.approx(pred["predicted_ms"] / pred["measured_ms"])
    assert pred["measured_ms"] == pytest.approx(np.median(report["engines"]["tuned"]["quiet"]["samples_ms"]))


def test_markdown_report_holds_the_figures(with_ort):
    _, report, prefix = with_ort
    md = prefix.with_suffix(".md").read_text()
    q = report["engines"]["onnxruntime"]["quiet"]
    row = next(line for line in md.splitlines() if line.startswith("| onnxruntime |"))
    assert row.split(" | ")[1:4] == [f"{q['p50_ms']:.3f}", f"{q['p90_ms']:.3f}", f"{q['p99_ms']:.3f}"]
    assert "## Per-op-type totals" in md and "| Conv |" in md


def test_without_peers_only_ours(files, tmp_path):
    prefix = tmp_path / "none"
    code, out, err = _main_quiet(["bench", str(files["model"]), "--db", str(files["db"]), "--peers", "none", *FAST,
                                  "--idle-runs", "0", "-o", str(prefix)])
    assert code == 0, err
    assert [r[0] for r in _rows(out, "latency (")] == ["tuned"]
    per_op = {r[0]: r for r in _rows(out, "per-op-type totals")}
    assert per_op["Conv"][4] == "-" and "first run after" not in out
    report = json.loads(prefix.with_suffix(".json").read_text())
    assert set(report["engines"]) == {"tuned"} and set(report["op_ms"]) == {"tuned"}


def test_our_op_totals_sum_the_step_medians(session, monkeypatch):
    recorded = []
    original = ops.our_step_times
    monkeypatch.setattr(ops, "our_step_times", lambda *a, **k: recorded.append(original(*a, **k)) or recorded[-1])
    model = session.compile()
    table = ops.our_op_times(model, session.random_inputs(), runs=3)
    steps, times = recorded[0]
    assert times.shape == (3, len(model.steps))
    medians = np.median(times, axis=0)
    assert sum(v["ms"] for v in table.values()) == pytest.approx(medians.sum())
    # Independently: the graph's layers by op, and the adapts.
    expected = {}
    for i, step in enumerate(steps):
        op = "adapt" if step.kind == "adapt" else session.graph.layer(step.name).op
        expected[op] = expected.get(op, 0.0) + medians[i]
    assert {op: v["ms"] for op, v in table.items()} == pytest.approx(expected)
    counts = dict(session.graph.op_counts())
    if model.adapts:
        counts["adapt"] = len(model.adapts)
    assert {op: v["count"] for op, v in table.items()} == counts
    assert sum(v["pct"] for v in table.values()) == pytest.approx(100)
    assert list(table) == sorted(table, key=lambda op: -table[op]["ms"])


def _ev(name, op, ts, dur):
    return {"cat": "Node", "name": name, "ts": ts, "dur": dur, "args": {"op_name": op}}


def test_ort_profile_parsing_on_a_hand_made_trace():
    events = [
        {"cat": "Session", "name": "session_initialization", "ts": 0, "dur": 500},
        {"cat": "Session", "name": "model_run", "ts": 1000, "dur": 100},   # warm-up, skipped
        _ev("conv1_kernel_time", "Conv", 1010, 90),
        {"cat": "Session", "name": "model_run", "ts": 2000, "dur": 200},
        _ev("conv1_fence_before", "Conv", 2001, 0),
        _ev("conv1_kernel_time", "Conv", 2002, 40),
        _ev("conv2_kernel_time", "Conv", 2050, 60),
        _ev("relu_kernel_time", "Relu", 2120, 10),
        {"cat": "Session", "name": "model_run", "ts": 3000, "dur": 200},
        _ev("conv1_kernel_time", "Conv", 3002, 50),
        _ev("conv2_kernel_time", "Conv", 3050, 80),
        _ev("relu_kernel_time", "Relu", 3120, 30),
        {"cat": "Session", "name": "model_run", "ts": 4000, "dur": 200},
        _ev("conv1_kernel_time", "Conv", 4002, 45),
        _ev("conv2_kernel_time", "Conv", 4050, 70),
        _ev("relu_kernel_time", "Relu", 4120, 20),
        _ev("stray_kernel_time", "Add", 9000, 999),   # outside every run: not counted
        {"cat": "Node", "name": "no_op_name", "ts": 2100, "dur": 77, "args": {}},
    ]
    times, op_of = ops.node_times(events, skip_runs=1)
    assert times == {"conv1": [0.040, 0.050, 0.045], "conv2": [0.060, 0.080, 0.070], "relu": [0.010, 0.030, 0.020]}
    assert op_of == {"conv1": "Conv", "conv2": "Conv", "relu": "Relu"}
    table = ops.ort_op_table(events, skip_runs=1)
    assert list(table) == ["Conv", "Relu"]
    assert table["Conv"]["ms"] == pytest.approx(0.045 + 0.070) and table["Conv"]["count"] == 2
    assert table["Relu"]["ms"] == pytest.approx(0.020) and table["Relu"]["count"] == 1
    assert table["Relu"]["pct"] == pytest.approx(100 * 0.020 / 0.135)
    # Without model_run events the whole trace is one run.
    flat = ops.ort_op_table([e for e in events if e.get("name") != "model_run"])
    assert flat["Add"]["ms"] == pytest.approx(0.999) and flat["Conv"]["ms"] == pytest.approx(0.090 + 0.135 + 0.210)


def test_ort_profile_of_the_model_names_its_nodes(files):
    from workbench.runtime.interpreter import random_inputs
    from workbench.onnx_io.read import read_model
    model = read_model(files["model"])
    events = ops.ort_profile(model, random_inputs(workbench_graph(files)), threads=1, runs=2)
    assert sum(e.get("name") == "model_run" for e in events) == 3   # one warm-up and two timed
    table = ops.ort_op_table(events, skip_runs=1)
    assert table["Conv"]["count"] == sum(n.op_type == "Conv" for n in model.graph.node)
    assert all(v["ms"] > 0 for v in table.values())


def workbench_graph(files):
    import workbench
    return workbench.load(str(files["model"]))


def test_load_runs_and_kills_its_busy_process(files, tmp_path, monkeypatch):
    seen = []
    original = load_mod.busy_process

    @contextlib.contextmanager
    def recording():
        with original() as proc:
            seen.append((proc, proc.poll()))   # still running inside the block
            yield proc
    monkeypatch.setattr(load_mod, "busy_process", recording)
    prefix = tmp_path / "loaded"
    code, out, err = _main_quiet(["bench", str(files["model"]), "--db", str(files["db"]), "--peers", "ort", *FAST,
                                  "--idle-runs", "0", "--op-runs", "0", "--load", "-o", str(prefix)])
    assert code == 0, err
    (proc, status_inside), = seen
    assert status_inside is None and proc.args[-2:] == [load_mod.BUSY_CODE, str(os.getpid())]
    assert proc.returncode is not None   # killed and reaped
    with pytest.raises(ProcessLookupError):
        os.kill(proc.pid, 0)
    report = json.loads(prefix.with_suffix(".json").read_text())
    rows = {r[0]: r for r in _rows(out, "under load")}
    assert set(rows) == {"tuned", "onnxruntime"}
    for name, e in report["engines"].items():
        loaded, quiet = np.median(e["loaded"]["samples_ms"]), np.median(e["quiet"]["samples_ms"])
        assert e["slowdown_under_load"] == pytest.approx(loaded / quiet)
        assert float(rows[name][3]) == pytest.approx(loaded / quiet, abs=6e-3)


def test_busy_process_is_killed_when_the_block_raises():
    with pytest.raises(RuntimeError):
        with load_mod.busy_process() as proc:
            assert proc.poll() is None
            raise RuntimeError("measurement failed")
    assert proc.returncode is not None


def test_nhwc_session_and_missing_openvino(files, monkeypatch):
    """The API on an NHWC session: ORT (NCHW) agrees with our transposed outputs; an absent
    OpenVINO is a note, not a failure."""
    import workbench
    from workbench.onnx_io.read import read_model
    monkeypatch.setitem(sys.modules, "openvino", None)   # import openvino -> ImportError
    s = Session(workbench.load(str(files["model"])), num_threads=1, db=str(files["db"]), io_format="nhwc")
    s.tune()
    result = bench_mod.bench(s, read_model(files["model"]), peers=["onnxruntime", "openvino"], runs=3, warmup=1,
                             idle_runs=0, op_runs=0)
    assert result.errors["onnxruntime"] < 1e-4
    assert set(result.latency) == {"tuned", "onnxruntime"}
    assert any("openvino is not installed" in n for n in result.notes)
    assert "note: openvino is not installed" in bench_mod.report.text(result)


@pytest.mark.parametrize("argv, message", [
    (["--peers", "ort,tensorrt"], "unknown peer(s) 'tensorrt'"),
    (["--runs", "0"], "--runs must be >= 1"),
])
def test_bad_options_exit_2(files, argv, message):
    code, out, err = _main_quiet(["bench", str(files["model"]), *argv])
    assert code == 2 and message in err and out == ""


def test_zoo_model_takes_a_square_resolution_only():
    code, out, err = _main_quiet(["bench", "tiny", "--resolution", "32x48", "--peers", "none"])
    assert code == 2 and "takes a square --resolution R, got 32x48" in err and out == ""


def test_missing_file_exits_2(tmp_path):
    code, out, err = _main_quiet(["bench", str(tmp_path / "nope.onnx"), "--peers", "none"])
    assert code == 2 and "nope.onnx: no such file" in err


def test_tuned_file_runs_its_plan_and_rejects_shape_options(session, files, tmp_path):
    path = tmp_path / "tiny.tuned.onnx"
    session.export(str(path), measure_runs=0)
    code, out, err = _main_quiet(["bench", str(path), "--batch", "2"])
    assert code == 2 and "tuned file: --batch" in err
    code, out, err = _main_quiet(["bench", str(path), "--peers", "ort", *FAST, "--idle-runs", "0", "--op-runs", "0",
                                  "-o", str(tmp_path / "t")])
    assert code == 0, err
    assert "stored in the tuned file" in out and "no profiling" in out
    assert float({r[0]: r for r in _rows(out, "latency (")}["onnxruntime"][-1]) < 1e-4


def test_compare_fills_per_op_totals(session):
    c = session.compare(runs=2, families=False, greedy=False)
    graph_ops = set(session.graph.op_counts())
    assert set(c.op_ms["tuned"]) - {"adapt"} == graph_ops
    assert all(v >= 0 for v in c.op_ms["tuned"].values()) and c.op_ms["tuned"]["Conv"] > 0
    assert c.op_ms["onnxruntime"]["Conv"] > 0
    assert c.error["onnxruntime"] < 1e-4
    assert c.measured_ms["tuned"] == pytest.approx(c.latency["tuned"].median_ms)
    assert session.measured is c.latency["tuned"]


def test_openvino_peer_agrees_with_ours(session, files):
    pytest.importorskip("openvino")   # optional, benchmark-only
    from workbench.onnx_io.read import read_model
    result = bench_mod.bench(session, read_model(files["model"]), peers=["openvino"], runs=3, warmup=1,
                             idle_runs=0, op_runs=0)
    assert set(result.latency) == {"tuned", "openvino"} and result.errors["openvino"] < 1e-4
    assert result.settings["openvino"]["INFERENCE_PRECISION_HINT"] == "f32"


def test_json_report_is_strict_json(session, files, tmp_path):
    from workbench.onnx_io.read import read_model
    result = bench_mod.bench(session, read_model(files["model"]), peers=[], runs=2, warmup=0, idle_runs=0, op_runs=0)
    result.errors["tuned"] = float("inf")   # as for a peer whose outputs share no name with ours
    json_path, _ = bench_mod.report.write(result, tmp_path / "r")
    report = json.loads(json_path.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert report["engines"]["tuned"]["max_relative_error_vs_tuned"] is None


def test_the_busy_child_ends_when_its_parent_is_killed():
    """A benchmark killed by a signal (no ``finally`` runs) leaves no process spinning behind."""
    import os
    import signal
    import subprocess
    import sys
    import time
    code = ("import sys, time\nfrom workbench.bench.load import busy_process\n"
            "with busy_process() as p:\n    print(p.pid, flush=True)\n    time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    os.kill(child, 0)   # spinning
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            with open(f"/proc/{child}/stat") as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    break   # exited; a zombie until init reaps it
        except FileNotFoundError:
            break
        time.sleep(0.05)
    else:
        os.kill(child, signal.SIGKILL)
        raise AssertionError("the busy child outlived its parent")
