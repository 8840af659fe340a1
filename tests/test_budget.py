"""Selection under an error budget (workbench.tuning.budget): the plan keeps to ``max_error``
against float32, measured independently (ONNX Runtime), by keeping the layers whose bfloat16 buys
the least time for its error in float32; local errors of a layer alone; the budget through the
CLI and the tuned file."""
import json

import numpy as np
import onnx
import pytest
from onnx import helper

import workbench
from onnx_helpers import make_model
from workbench.cli.main import main
from workbench.errors import WorkbenchError
from workbench.onnx_io.ort import run_onnxruntime
from workbench.runtime import cpu
from workbench.runtime.compiled import CompiledModel
from workbench.session import Session
from workbench.tuning import budget
from workbench.tuning.precision import compare

NATIVE = cpu.kernel_module("gemm_bf16", "avx512bf16") is not None
needs_bf16 = pytest.mark.skipif(not NATIVE, reason="this CPU lacks AVX512-BF16: no cpu:bfloat16 routine applies")


def _chain(layers=6, c=192, hw=28, head=True):
    """``layers`` 1x1 Conv + Relu of ``c`` channels (big enough that bfloat16 is the faster routine),
    then (``head``) a global pool and a Gemm classifier."""
    rng = np.random.default_rng(3)
    nodes, inits, x = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((c, c, 1, 1)) * np.sqrt(2.0 / c)).astype(np.float32)
        inits += [(f"w{i}", w), (f"b{i}", (0.1 * rng.standard_normal(c)).astype(np.float32))]
        nodes += [helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], kernel_shape=[1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        x = f"r{i}"
    if not head:
        return make_model(nodes, [("x", [1, c, hw, hw])], [(x, [1, c, hw, hw])], inits)
    inits.append(("wf", (rng.standard_normal((10, c)) / np.sqrt(c)).astype(np.float32)))
    nodes += [helper.make_node("GlobalAveragePool", [x], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
              helper.make_node("Gemm", ["f", "wf"], ["y"], transB=1)]
    return make_model(nodes, [("x", [1, c, hw, hw])], [("y", [1, 10])], inits)


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return str(tmp_path_factory.mktemp("budget") / "db.sqlite")


def _ort_error(model, session, seeds=(7, 8)):
    """The session's error against ONNX Runtime fp32 on inputs the budget never saw."""
    ours, ref = [], []
    for seed in seeds:
        feeds = session.random_inputs(seed=seed)
        ours.append(session.run(feeds))
        ref.append(run_onnxruntime(model, feeds))
    return compare(ours, ref)


@needs_bf16
def test_a_budget_keeps_the_plan_within_it_by_demoting_the_least_worthwhile_layers(db):
    model = _chain()
    s = Session.from_onnx(model, db=db)
    s.tune(precisions=["bfloat16"])
    free, free_cost = dict(s.plan.choice), s.plan.cost
    low = [n for n, d in free.items() if ":bfloat16:" in d]
    assert len(low) >= 4, free   # the 1x1 layers go to bfloat16 when nothing holds them back
    before = s.precision_error()
    limit = before.max_rel / 3
    s.tune(max_error=limit)
    report = s.budget
    assert report.met and report.after.max_rel <= limit, report
    assert report.before.max_rel == pytest.approx(before.max_rel)
    assert report.demoted and s.demoted == set(report.demoted)
    assert all(":float32:" in s.plan.choice[n] for n in report.demoted)
    # Checked independently: ONNX Runtime, other inputs (a margin for inputs the fit never saw).
    assert _ort_error(model, s).max_rel <= 2 * limit
    # Keeping to the budget costs time, never saves it (the DP's optimum without it is the fastest).
    assert s.plan.cost >= free_cost
    assert "error budget" in str(report) and "kept in float32" in str(report)


@needs_bf16
def test_a_budget_the_fast_plan_meets_changes_nothing_and_an_impossible_one_is_reported(db):
    s = Session.from_onnx(_chain(), db=db)
    s.tune(precisions=["bfloat16"])
    free, cost = dict(s.plan.choice), s.plan.cost
    s.tune(max_error=1.0)
    assert dict(s.plan.choice) == free and s.budget.demoted == [] and "met by the fastest plan" in str(s.budget)
    s.tune(max_error=0.0)   # float32 itself differs from the reference in the last bits
    assert not s.budget.met and "MISSED" in str(s.budget)
    assert all(":float32:" in d for d in s.plan.choice.values())
    assert s.plan.cost > cost
    s.max_error = None
    s.tune()
    assert dict(s.plan.choice) == free and s.budget is None and not s.demoted


def test_a_bad_budget_is_refused_before_anything_runs(tmp_path):
    s = Session.from_onnx(_chain(layers=1, c=8, hw=4), db=str(tmp_path / "db.sqlite"))
    for bad in (-0.1, float("nan"), "0.01"):
        with pytest.raises(WorkbenchError, match="max_error"):
            s.tune(max_error=bad)
    assert s.profiled is None


@needs_bf16
def test_local_error_of_a_lone_layer_is_its_error_against_onnxruntime():
    """On a one-layer model the layer's local error is the model's error: both measured here,
    the second through the compiled model and ONNX Runtime."""
    from workbench import routines
    model = _chain(layers=1, c=64, hw=10)
    graph = workbench.load(model.SerializeToString())
    conv = next(layer for layer in graph if layer.op == "Conv")
    descriptor = "cpu:bfloat16:nhwc/gemm1x1_bf16_f32io"
    sub = _chain(layers=1, c=64, hw=10, head=False)   # the same conv alone
    sub_graph = workbench.load(sub.SerializeToString())
    (layer,) = list(sub_graph)
    cm = CompiledModel(sub_graph, {layer.name: descriptor})
    feeds = [{"x": np.random.default_rng(s).standard_normal((1, 64, 10, 10)).astype(np.float32)} for s in (0, 1)]
    want = compare([cm.run(f) for f in feeds], [run_onnxruntime(sub, f) for f in feeds])
    ex = budget.LocalErrors(graph, {conv.name: routines.get("Conv", descriptor)})
    for f in feeds:
        ex.run(f)
    assert ex.errors[conv.name] == pytest.approx(want.max_rel, rel=1e-3, abs=1e-7)
    assert ex.errors[conv.name] > 1e-5   # it did round to bfloat16


def test_rank_puts_error_per_second_first():
    local = {"a": 0.01, "b": 0.02, "c": 0.02, "d": 0.001}
    loss = {"a": 1e-6, "b": 1e-5, "c": 4e-5, "d": 1e-6}
    # a: 1e-4 / 1e-6 = 100; b: 4e-4 / 1e-5 = 40; c: 10; d: 1
    assert budget.rank(local, loss) == ["a", "b", "c", "d"]


@needs_bf16
def test_cli_tune_with_a_budget_prints_it_and_the_file_keeps_it(tmp_path, capsys, db):
    src, out = tmp_path / "m.onnx", tmp_path / "t.onnx"
    onnx.save(_chain(), src)
    assert main(["tune", str(src), "-o", str(out), "--db", db, "--precision", "bf16", "--max-error", "0.004",
                 "--runs", "0"]) == 0
    text = capsys.readouterr().out
    assert "error budget max error 0.004: met" in text, text
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert float(meta["workbench.max_error"]) == 0.004
    demoted = json.loads(meta["workbench.demoted"])
    loaded = Session.load(str(out))
    assert loaded.max_error == 0.004 and loaded.demoted == set(demoted)
    assert loaded.precision.max_rel <= 0.004
    feeds = loaded.random_inputs(seed=4)
    ref = run_onnxruntime(onnx.load(src), feeds)
    assert compare([loaded.run(feeds)], [ref]).max_rel <= 0.008
    with pytest.raises(SystemExit):
        main(["tune", str(src), "-o", str(out), "--max-error", "x"])
    assert main(["tune", str(src), "-o", str(out), "--db", db, "--max-error", "-1", "--runs", "0"]) != 0
    assert "--max-error" in capsys.readouterr().err
