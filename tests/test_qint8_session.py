"""qint8 in a Session and the CLI: calibration before tuning (refused without it, warned when
synthetic), plans that mix qint8 with float32 against the reference, the cosine budget, the tuned
file that carries ranges and budget, and ``workbench tune --precision qint8``."""
import warnings

import numpy as np
import pytest

from workbench import zoo
from workbench.cli.main import main
from workbench.ir.quant import QuantError
from workbench.routines.qint8 import kernels
from workbench.session import Session
from workbench.tuning.budget import Budget
from workbench.tuning.precision import compare

needs_vnni = pytest.mark.skipif(kernels() is None, reason="this CPU or build lacks AVX512-VNNI: no qint8 routine")


def _session(tmp_path, name="tiny"):
    return Session.from_onnx(zoo.build(name), num_threads=2, db=str(tmp_path / "db.sqlite"))


def _feeds(s, n=4, start=100):
    return [s.random_inputs(seed=start + i) for i in range(n)]


def _qint8_cheap(s, factor=0.1):
    """Scale the profile's qint8 records by ``factor`` (and select again): plans that choose qint8
    whatever the shared machine measured, for tests of what is done with them."""
    from dataclasses import replace
    for recs in s.profiled.routine.values():
        for d, rec in recs.items():
            if ":qint8:" in d:
                recs[d] = replace(rec, median=rec.median * factor)
    s.context = None
    return s.retune()


def test_qint8_without_calibration_is_refused(tmp_path):
    s = _session(tmp_path)
    with pytest.raises(QuantError, match="qint8 needs calibration data"):
        s.tune(precisions=["qint8"])
    with pytest.raises(QuantError, match="missing calibration data"):
        s.calibrate()


def test_synthetic_calibration_warns(tmp_path):
    s = _session(tmp_path)
    with pytest.warns(UserWarning, match="seeded random inputs"):
        s.calibrate(synthetic=True)
    assert len(s.graph.quant) and "seeded random" in s.quant_calibration


@needs_vnni
def test_a_qint8_plan_is_close_to_float32_and_faster_in_int8(tmp_path):
    s = _session(tmp_path)
    cal = _feeds(s)
    table = s.calibrate(cal)
    # every float activation the reference computes has per-tensor uint8 parameters
    assert table and all(p.dtype == "uint8" and not p.per_channel for p in table.values())
    s.tune(precisions=["qint8"])
    plan = _qint8_cheap(s)
    q8 = [n for n, d in plan.choice.items() if ":qint8:" in d]
    assert len(q8) >= 4 and s.low_precision == ["qint8"]
    err = s.precision_error(_feeds(s, 2, start=7))   # inputs calibration never saw
    assert err.cosine > 0.99 and err.top1 == 1.0
    # the same plan against the NumPy reference by hand
    from workbench.runtime.interpreter import ReferenceExecutor
    f = s.random_inputs(seed=9)
    e = compare([s.run(f)], [ReferenceExecutor(s.graph).run(f)])
    assert e.cosine > 0.99


@needs_vnni
def test_the_cosine_budget_demotes_until_it_holds(tmp_path):
    s = _session(tmp_path)
    cal = _feeds(s)
    s.calibrate(cal)
    s.tune(precisions=["qint8"])
    free = _qint8_cheap(s)
    before = s.precision_error(cal)
    target = min(0.99999999, 1 - (1 - before.cosine) / 4)   # tighter than the free plan
    s.tune(min_cosine=target)
    report = s.budget
    assert report is not None and report.budget == Budget(min_cosine=target)
    assert report.met == (report.after.cosine >= target)
    if report.met:
        assert s.precision_error(cal).cosine >= target
    assert report.demoted and sum(":qint8:" in d for d in s.plan.choice.values()) < \
        sum(":qint8:" in d for d in free.choice.values())
    with pytest.raises(Exception, match="cosine budget is a number"):
        s.tune(min_cosine=2.0)


@needs_vnni
def test_the_tuned_file_keeps_ranges_and_budget(tmp_path):
    s = _session(tmp_path)
    s.calibrate(_feeds(s))
    s.tune(precisions=["qint8"], min_cosine=0.9)
    path = tmp_path / "tuned.onnx"
    s.export(path, measure_runs=2)
    t = Session.load(path)
    f = s.random_inputs(seed=3)
    a, b = s.run(f), t.run(f)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert t.min_cosine == 0.9 and t.quant_calibration == s.quant_calibration
    assert {k: v.to_record() for k, v in t.graph.quant.items()} == {k: v.to_record() for k, v in s.graph.quant.items()}


@needs_vnni
def test_cli_tune_with_qint8(tmp_path, capsys):
    model = tmp_path / "tiny.onnx"
    zoo.save("tiny", model)
    cal = tmp_path / "cal"
    cal.mkdir()
    for i in range(3):
        np.save(cal / f"{i}.npy", np.random.default_rng(i).standard_normal((1, 3, 32, 32)).astype(np.float32))
    out = tmp_path / "t.onnx"
    base = ["tune", str(model), "-o", str(out), "--db", str(tmp_path / "db.sqlite"), "--runs", "3"]
    assert main(base + ["--precision", "int8"]) == 2
    assert "needs calibration data" in capsys.readouterr().err
    assert main(base + ["--precision", "float32,qint8", "--calibration", str(cal), "--min-cosine", "0.99"]) == 0
    text = capsys.readouterr().out
    assert "calibrated qint8 ranges: minmax over 3 given input(s)" in text
    assert "error budget cosine >= 0.99" in text
    assert Session.load(out).min_cosine == 0.99
    assert main(base + ["--precision", "qint8", "--synthetic-calibration"]) == 0
    assert "seeded random" in capsys.readouterr().out


@needs_vnni
def test_the_frontier_walks_from_the_fastest_plan_to_float32(tmp_path):
    s = _session(tmp_path)
    cal = _feeds(s)
    s.calibrate(cal)
    s.tune(precisions=["qint8"])
    _qint8_cheap(s)
    before = dict(s.plan.choice)
    points = s.frontier()
    assert dict(s.plan.choice) == before   # the session's plan is as it was
    assert points[0].kept == 0 and points[0].layers.get("qint8", 0) > 0
    last = points[-1]
    assert last.layers == {"float32": len(s.graph)} and last.error.cosine > 1 - 1e-9
    assert [p.kept for p in points] == sorted({p.kept for p in points})
    # pareto: exactly the points no other beats on both latency and cosine (brute force)
    for p in points:
        beaten = any(q.predicted_s <= p.predicted_s and q.error.cosine >= p.error.cosine
                     and (q.predicted_s, q.error.cosine) != (p.predicted_s, p.error.cosine) for q in points)
        assert p.pareto == (not beaten)
    assert any(p.pareto for p in points) and points[0].pareto   # the fastest plan is never beaten on latency
    d = points[0].to_dict()
    assert d["predicted_ms"] == pytest.approx(points[0].predicted_s * 1e3) and d["layers"] == points[0].layers


@needs_vnni
def test_sensitivity_is_the_error_with_only_that_layer_low(tmp_path):
    from workbench.runtime.compiled import CompiledModel
    from workbench.runtime.interpreter import ReferenceExecutor
    s = _session(tmp_path)
    cal = _feeds(s, 3)
    s.calibrate(cal)
    s.tune(precisions=["qint8"])
    _qint8_cheap(s)
    sens = s.sensitivity()
    low = {n for n, d in s.plan.choice.items() if ":qint8:" in d}
    assert set(sens) <= low and len(sens) >= len(low) - 1   # a view routine's layer computes nothing
    name, err = min(sens.items(), key=lambda kv: kv[1].cosine)
    # by hand: every other layer on a float32 routine, this one on its qint8 routine
    costs, _ = s.costs()
    choice = {n: (d if n == name or ":float32:" in d else
                  min((k for k in costs[n] if ":float32:" in k), key=costs[n].get)) for n, d in s.plan.choice.items()}
    model = CompiledModel(s.graph, choice, num_threads=2)
    want = compare([model.run(f) for f in cal], [ReferenceExecutor(s.graph).run(f) for f in cal])
    assert err.cosine == pytest.approx(want.cosine, abs=1e-12) and err.max_rel == pytest.approx(want.max_rel)
    rows = {r["name"]: r for r in s.layer_rows()}
    assert rows[name]["sensitivity"] is err and rows[name]["precision"] == "qint8"
    s.tune(precisions=["float32"])   # another plan: the sensitivities were of the old one
    assert s.sensitivities == {}


@needs_vnni
def test_pin_precision(tmp_path):
    from workbench.errors import PinError
    s = _session(tmp_path)
    conv = next(layer.name for layer in s.graph if layer.op == "Conv" and layer.attrs["group"] == 1
                and s.graph.input_specs(layer)[0].shape[1] > 3)
    with pytest.raises(PinError, match="calibrate\\(\\) first"):
        s.pin_precision(conv, "qint8")
    with pytest.raises(PinError, match="unknown precision"):
        s.pin_precision(conv, "int4")
    s.calibrate(_feeds(s))
    s.pin_precision(conv, "int8")   # an alias
    s.tune(precisions=["float32"])  # qint8 not allowed elsewhere, but this layer is pinned to it
    assert ":qint8:" in s.plan.choice[conv]
    assert all(":float32:" in d for n, d in s.plan.choice.items() if n != conv)
    path = tmp_path / "pinned.onnx"
    s.export(path, measure_runs=2)
    assert Session.load(path).precision_pins == {conv: "qint8"}   # the tuned file keeps the pin
    s.unpin_precision(conv).pin_precision(conv, "float32")
    s.tune(precisions=["qint8"])
    _qint8_cheap(s)   # qint8 wherever it is allowed, but the pinned layer
    assert ":float32:" in s.plan.choice[conv] and s.low_precision == ["qint8"]
    with pytest.raises(PinError, match="no precision pin"):
        s.unpin_precision(next(iter(s.graph)).name)
