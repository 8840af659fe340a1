"""The tuning commands: ``workbench profile``, ``workbench tune``, and ``run``/``routines``/``info``
on a tuned file.  Every database lives under tmp_path (never the user's cache); 1 thread and 2
profiling repeats keep it quick on a shared machine."""
import contextlib
import csv
import io
import json
import re

import numpy as np
import onnx
import pytest

import workbench
from workbench.onnx_io.ort import run_onnxruntime
from workbench.cli.main import main
from onnx_helpers import make_model

FAST = ["--threads", "1", "--repeats", "2"]
PINS = {"stem.maxpool": "cpu:float32:nchw/direct", "branch.a": "cpu:float32:nchw/gemm1x1"}  # branch.a is layer 4


def _main_quiet(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _table(text):
    """Rows of a printed table: lines starting with a layer index, cells split on 2+ spaces."""
    return [re.split(r"\s{2,}", line.strip()) for line in text.splitlines() if re.match(r"^\d+\s{2,}\S", line)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny.onnx"
    assert _main_quiet(["zoo", "tiny", "-o", str(path), "--resolution", "32"])[0] == 0
    return path


@pytest.fixture(scope="module")
def tuned(tiny, tmp_path_factory):
    """``workbench tune`` once with two pins (by name and by index) and every export."""
    d = tmp_path_factory.mktemp("tuned")
    files = {k: d / name for k, name in [("onnx", "t.onnx"), ("db", "db.sqlite"), ("trace", "trace.json"),
                                          ("csv", "plan.csv"), ("jsonl", "profile.jsonl")]}
    code, out, err = _main_quiet(["tune", str(tiny), "-o", str(files["onnx"]), "--db", str(files["db"]), *FAST,
                                  "--runs", "3", "--pin", f"stem.maxpool={PINS['stem.maxpool']}",
                                  "--pin", f"4={PINS['branch.a']}", "--trace", str(files["trace"]),
                                  "--csv", str(files["csv"]), "--jsonl", str(files["jsonl"])])
    assert code == 0, err
    return files, out


def test_profile_twice_reuses_every_record(tiny, tmp_path, capsys):
    db, jsonl = tmp_path / "db.sqlite", tmp_path / "p.jsonl"
    assert main(["profile", str(tiny), "--db", str(db), *FAST, "--jsonl", str(jsonl)]) == 0
    captured = capsys.readouterr()
    first = re.search(r"(\d+) record\(s\) measured, (\d+) from the database .*, (\d+) shared", captured.out)
    measured, reused, shared = int(first[1]), int(first[2]), int(first[3])
    assert reused == 0   # an empty database
    assert measured > 0 and "profiling" in captured.err   # the tqdm bar is on stderr

    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    routine_recs = [r for r in records if r["kind"] == "routine"]
    assert len(records) == measured + shared
    graph = workbench.load(tiny)
    rows = _table(captured.out)
    assert [r[1] for r in rows] == [layer.name for layer in graph]
    for (index, name, op, fastest, ms, count), layer in zip(rows, graph):
        mine = [r for r in routine_recs if r["layer"] == name]
        assert op == layer.op and int(count) == len(mine) > 0
        best = min(mine, key=lambda r: r["median_s"])
        assert float(ms) == pytest.approx(best["median_s"] * 1e3, abs=1e-4)
        assert fastest == best["routine"] or any(r["routine"] == fastest and r["median_s"] == best["median_s"]
                                                 for r in mine)

    assert main(["profile", str(tiny), "--db", str(db), *FAST]) == 0
    assert f"0 record(s) measured, {measured} from the database" in capsys.readouterr().out


def test_tune_file_matches_printed_plan(tuned, tiny):
    files, out = tuned
    rows = _table(out.split("\n\n")[1])
    session = workbench.load(files["onnx"])
    assert isinstance(session, workbench.Session)
    graph = workbench.load(tiny)
    assert [r[1] for r in rows] == [layer.name for layer in graph]
    printed = {r[1]: r[3].removesuffix(" (pinned)") for r in rows}
    assert session.plan.choice == printed
    assert {r[1] for r in rows if r[3].endswith("(pinned)")} == set(PINS) == set(session.pins)
    for name, descriptor in PINS.items():
        assert printed[name] == descriptor and session.pins[name] == descriptor
    assert session.num_threads == 1

    predicted = float(re.search(r"predicted: ([\d.]+) ms", out)[1])
    measured = float(re.search(r"measured:  ([\d.]+) ms \(median of 3 runs", out)[1])
    assert predicted == pytest.approx(session.predicted_s * 1e3, abs=1e-4)
    assert measured == pytest.approx(float(session.tuned_metadata["measured_ms"]), abs=1e-4)
    assert re.search(r"^plan: (dp|milp),", out, re.M)[1] == session.tuned_metadata["plan_method"]
    greedy = float(re.search(r"vs greedy .*?: ([\d.]+) ms predicted", out)[1])
    family = float(re.search(r"vs best single family \(cpu:float32:\w+/[\w*]+\): ([\d.]+) ms", out)[1])
    assert predicted <= greedy + 1e-4     # the DP is exact under the same pins: never worse than greedy
    assert family > 0

    # The exports: JSON lines, a Chrome trace, one CSV row per layer agreeing with the plan.
    records = [json.loads(line) for line in files["jsonl"].read_text().splitlines()]
    assert {r["layer"] for r in records if r["kind"] == "routine"} == set(printed)
    trace = json.loads(files["trace"].read_text())
    assert {e["name"] for e in trace["traceEvents"] if e.get("cat") == "layer"} == set(printed)
    with files["csv"].open() as f:
        csv_rows = list(csv.DictReader(f))
    assert [r["name"] for r in csv_rows] == [layer.name for layer in graph]
    assert {r["name"]: r["routine"] for r in csv_rows} == printed
    assert {r["name"] for r in csv_rows if r["pinned"] == "1"} == set(PINS)


def test_run_tuned_file_uses_its_plan_and_matches_onnxruntime(tuned, tiny, tmp_path, capsys, monkeypatch):
    import workbench.session
    monkeypatch.setattr(workbench.session, "run_profile", lambda *a, **k: pytest.fail("run profiled a tuned file"))
    x = np.random.default_rng(7).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    files, _ = tuned
    assert main(["run", str(files["onnx"]), "--input", f"input={tmp_path / 'x.npy'}", "--check",
                 "--output-dir", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    meta = workbench.load(files["onnx"]).tuned_metadata
    assert (f"tuned plan: predicted {float(meta['predicted_ms']):.4f} ms, measured at tune time "
            f"{float(meta['measured_ms']):.4f} ms") in out
    assert "check logits: passed, 0 of 1000 element(s) beyond" in out and "check passed" in out
    ours = np.load(tmp_path / "out" / "logits.npy")
    expected = run_onnxruntime(onnx.load(tiny), {"input": x})["logits"]   # the original, untuned model
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert f"logits: (1, 1000) float32  mean {ours.mean():.6g}" in out


def test_run_tuned_file_rejects_filters_and_the_suggested_retune_works(tuned, tmp_path, capsys):
    path = str(tuned[0]["onnx"])
    assert main(["run", path, "--routine", "cpu:float32:nhwc/*"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("workbench: error:") and err.count("\n") == 1
    assert "tuned file" in err and "--routine" in err and "does not apply" in err
    assert f"retune instead: workbench tune {path} -o NEW.onnx [--routine FILTER]" in err
    new = tmp_path / "new.onnx"
    assert main(["tune", path, "-o", str(new), "--routine", "cpu:float32:nchw/*", "--db", str(tmp_path / "db"),
                 *FAST, "--runs", "0"]) == 0
    assert main(["run", str(new), "--check"]) == 0
    assert "check passed" in capsys.readouterr().out
    assert all(d.startswith("cpu:float32:nchw/") for d in workbench.load(new).plan.choice.values())


def test_tuned_file_shapes_are_fixed_and_the_suggested_command_works(tmp_path, capsys):
    """Other shapes need the original model tuned again: the message says so with the flags given,
    and that command (sizes and the original's path filled in) runs."""
    rng = np.random.default_rng(11)
    w = rng.standard_normal((6, 3, 3, 3)).astype(np.float32)
    model = make_model([onnx.helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
                        onnx.helper.make_node("Relu", ["c"], ["y"], name="relu")],
                       [("x", ["N", 3, "H", "W"])], [("y", None)], [("w", w)])
    original, tuned, new, db = (tmp_path / n for n in ("dyn.onnx", "dyn.tuned.onnx", "new.onnx", "db.sqlite"))
    onnx.save(model, original)
    assert main(["tune", str(original), "--batch", "1", "--resolution", "8x12", "-o", str(tuned), "--db", str(db),
                 *FAST, "--runs", "0"]) == 0
    capsys.readouterr()
    for argv in (["routines", str(tuned)], ["tune", str(tuned), "-o", str(new)]):
        assert main([*argv, "--batch", "2", "--resolution", "5x7"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{tuned} is a tuned file with fixed input shapes (x 1x3x8x12" in err
        assert "workbench tune ORIGINAL.onnx --batch N --resolution R -o NEW.onnx" in err, err
        assert not new.exists()
    # run takes other shapes of a tuned file as --shape (planned there, tests/test_session_shapes.py)
    assert main(["run", str(tuned), "--batch", "2", "--resolution", "5x7"]) == 2
    assert "give other input shapes with --shape NAME=DIMS" in capsys.readouterr().err
    assert main(["tune", str(original), "--batch", "2", "--resolution", "5x7", "-o", str(new), "--db", str(db),
                 *FAST, "--runs", "0"]) == 0
    assert main(["run", str(new), "--check"]) == 0
    out = capsys.readouterr().out
    assert "y: (2, 6, 5, 7) float32" in out and "check passed" in out


def test_fingerprint_warning_is_one_line(tuned, capsys, recwarn):
    # Tuned with 1 thread: running with 2 is another setup, so the file warns, as one line.
    assert main(["run", str(tuned[0]["onnx"]), "--threads", "2"]) == 0
    err = capsys.readouterr().err
    warning_lines = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warning_lines) == 1 and "threads" in warning_lines[0] and "retune" in warning_lines[0]
    assert "FingerprintWarning" not in err and "warnings.warn" not in err
    assert not [w for w in recwarn if "tuned on another machine" in str(w.message)]


def test_routines_explains_each_layer_from_node_metadata(tuned, capsys):
    files, _ = tuned
    assert main(["routines", str(files["onnx"])]) == 0
    out = capsys.readouterr().out
    model = onnx.load(files["onnx"])
    props = {n.name: {p.key: p.value for p in n.metadata_props} for n in model.graph.node
             if any(p.key == "workbench.routine" for p in n.metadata_props)}
    graph = workbench.load(files["onnx"]).graph
    blocks = re.split(r"\n(?=\s*\d+ )", out.split("\n", 1)[1])
    assert len(blocks) == len(graph) == len(props)
    any_adapts = False
    for i, (layer, block) in enumerate(zip(graph, blocks)):
        p = props[layer.name]
        head = block.splitlines()[0].split()
        assert head[:4] == [str(i), layer.name, layer.op, p["workbench.routine"]]
        candidates = json.loads(p["workbench.candidates"])
        assert float(head[4]) == pytest.approx(candidates[p["workbench.routine"]], abs=1e-4)
        for descriptor, ms in candidates.items():
            if descriptor != p["workbench.routine"]:
                assert f"{descriptor} {ms:.4f}" in block
        assert ("[pinned]" in block) == (p["workbench.pinned"] == "1") == (layer.name in PINS)
        adapts = json.loads(p["workbench.adapts"])
        any_adapts |= bool(adapts)
        assert ("adapts into it" in block) == bool(adapts)
        for tensor, src, dst in adapts:
            assert f"{tensor} {src}->{dst}" in block
    assert any_adapts   # the pins force layout changes somewhere


def test_info_on_a_tuned_file(tuned, capsys):
    assert main(["info", str(tuned[0]["onnx"])]) == 0
    out = capsys.readouterr().out
    assert "layers after folding and fusion" in out and "tuned file: plan" in out
    for layer in workbench.load(tuned[0]["onnx"]).graph:
        assert layer.name in out


@pytest.mark.parametrize("args, message", [
    (["--pin", "nope=cpu:float32:nchw/direct"], "'nope'"),
    (["--pin", "99=cpu:float32:nchw/direct"], "no layer 99"),
    (["--pin", "4=cpu:float32:nchw/winograd4"], "branch.a"),            # 1x1 conv: Winograd does not apply
    (["--pin", "stem.maxpool=cpu:float32:nchw/bogus"], "stem.maxpool"),
    (["--routine", "cpu:float32:nchw/winograd4@1"], "stem.maxpool"),    # a filter leaving no routine
])
def test_bad_pins_and_filters_exit_2_before_profiling(tiny, tmp_path, capsys, args, message):
    out = tmp_path / "t.onnx"
    assert main(["tune", str(tiny), "-o", str(out), "--db", str(tmp_path / "db.sqlite"), *FAST, *args]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("workbench: error:") and message in captured.err, captured.err
    assert captured.err.count("\n") == 1 and "profiled" not in captured.out and not out.exists()


@pytest.mark.parametrize("pin", ["1:cpu:float32:nchw/direct", "=cpu:float32:nchw/direct", "1=direct"])
def test_malformed_pin_is_an_argparse_error(tiny, tmp_path, capsys, pin):
    with pytest.raises(SystemExit) as exc:
        main(["tune", str(tiny), "-o", str(tmp_path / "t.onnx"), "--db", str(tmp_path / "db.sqlite"), "--pin", pin])
    assert exc.value.code == 2 and "LAYER=" in capsys.readouterr().err


def test_corrupt_db_exits_2_and_rebuild_keeps_it_aside(tiny, tmp_path, capsys):
    db = tmp_path / "db.sqlite"
    garbage = b"this is not an SQLite database " * 100
    db.write_bytes(garbage)
    for command in (["profile"], ["tune", "-o", str(tmp_path / "t.onnx")]):
        assert main([*command, str(tiny), "--db", str(db), *FAST]) == 2
        err = capsys.readouterr().err
        assert err.startswith("workbench: error:") and err.count("\n") == 1
        assert str(db) in err and "--rebuild-db" in err
    assert main(["profile", str(tiny), "--db", str(db), *FAST, "--rebuild-db"]) == 0
    out = capsys.readouterr().out
    moved = re.search(r"aside to (\S+);", out)[1]
    assert open(moved, "rb").read() == garbage and moved.startswith(str(db) + ".corrupt-")
    assert re.search(r"[1-9]\d* record\(s\) measured", out)
    assert main(["profile", str(tiny), "--db", str(db), *FAST]) == 0
    assert "0 record(s) measured" in capsys.readouterr().out


def test_corrupt_tuned_files_exit_2(tuned, tmp_path, capsys):
    data = tuned[0]["onnx"].read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 2])
    model = onnx.load(tuned[0]["onnx"])
    node = next(n for n in model.graph.node if n.name == "stem.conv")
    next(p for p in node.metadata_props if p.key == "workbench.routine").value = "cpu:float32:nchw/bogus"
    edited = tmp_path / "edited.onnx"
    onnx.save(model, edited)
    for path, message in ((truncated, "truncated"), (edited, "stem.conv")):
        for command in ("run", "routines"):
            assert main([command, str(path)]) == 2
            err = capsys.readouterr().err
            assert err.startswith("workbench: error:") and message in err and err.count("\n") == 1, err


def test_tune_in_context_prints_the_calibration_and_stores_its_prediction(tiny, tmp_path, capsys):
    out_path = tmp_path / "ctx.onnx"
    code, out, err = _main_quiet(["tune", str(tiny), "-o", str(out_path), "--db", str(tmp_path / "db.sqlite"),
                                  *FAST, "--runs", "0", "--in-context"])
    assert code == 0, err
    line = next(l for l in out.splitlines() if l.startswith("in context:"))
    assert "plan(s) timed" in line and "ms per run outside the steps" in line
    predicted = float(next(l for l in out.splitlines() if l.startswith("predicted:")).split()[1])
    assert workbench.Session.load(str(out_path), warn=False).predicted_s * 1e3 == pytest.approx(predicted, rel=1e-3)
