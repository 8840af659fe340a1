"""bfloat16 routines mixed with float32 by the selection: the precision policy (float32 unless
asked), the bfloat16 1x1 convolutions against ONNX Runtime, the cast adapts the plan prices
between them, the error report against float32, and tuned files that keep all of it."""
import ml_dtypes
import numpy as np
import pytest
from onnx import helper

import workbench
from onnx_helpers import make_model
from routine_helpers import run_with_routine
from workbench import routines
from workbench.cli.main import main
from workbench.errors import WorkbenchError
from workbench.ir.formats import Format, parse_precisions
from workbench.onnx_io.ort import run_onnxruntime
from workbench.runtime import cpu
from workbench.session import Session
from workbench.tuning import filters
from workbench.tuning.precision import PrecisionError, compare, rounding_layers, tolerance

NATIVE = cpu.kernel_module("gemm_bf16", "avx512bf16") is not None
needs_bf16 = pytest.mark.skipif(not NATIVE, reason="this CPU lacks AVX512-BF16: no cpu:bfloat16 routine applies")
BF16_1X1 = "cpu:bfloat16:nhwc/gemm1x1_bf16"


def _model(c=48, m=64, hw=14):
    """Conv3x3 -> Relu -> 1x1 Conv (bias, Relu) -> 1x1 Conv + residual -> Relu -> GAP -> Flatten -> Gemm:
    1x1 layers for the bfloat16 routines and float32-only layers around them."""
    rng = np.random.default_rng(0)
    w = lambda *s: (rng.standard_normal(s) / np.sqrt(np.prod(s[1:]))).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c0"], ["r0"]),
             helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"], kernel_shape=[1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], kernel_shape=[1, 1]),
             helper.make_node("Add", ["c2", "r0"], ["s"]),
             helper.make_node("Relu", ["s"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "wf"], ["y"], transB=1)]
    inits = [("w0", w(m, c, 3, 3)), ("b0", w(m)), ("w1", w(96, m, 1, 1)), ("b1", w(96)), ("w2", w(m, 96, 1, 1)),
             ("wf", w(10, m))]
    return make_model(nodes, [("x", [1, c, hw, hw])], [("y", [1, 10])], inits)


def test_precisions_parse_and_refuse_unknown_names():
    assert parse_precisions("bf16") == ("float32", "bfloat16")
    assert parse_precisions(["float32", "bfloat16", "BF16"]) == ("float32", "bfloat16")
    assert parse_precisions([]) == ("float32",)
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        parse_precisions("fp16")


def test_float32_unless_asked(tmp_path):
    """Without precisions, no bfloat16 routine is a candidate, default or filtered."""
    s = Session.from_onnx(_model(), db=str(tmp_path / "db.sqlite"))
    for layer in s.graph:
        assert all(r.dtype == "float32" for r in routines.applicable(s.graph, layer))
    allowed, _ = filters.allowed(s.graph, ["cpu:*:nhwc/*"])
    assert all(":float32:" in d for ds in allowed.values() for d in ds)
    with pytest.raises(WorkbenchError, match="unknown precision"):
        s.tune(precisions=["int4"])


@needs_bf16
def test_bf16_routine_matches_onnxruntime_within_bfloat16_error():
    graph = workbench.load(_model().SerializeToString())
    ours, ref, used = run_with_routine(graph, BF16_1X1)
    assert len(used) == 2   # both 1x1 layers, the second with its fused residual
    err = compare([ours], [ref])
    assert err.cosine > 0.9999 and err.max_rel < tolerance(len(used)), err
    assert err.max_rel > 1e-6   # it did compute in bfloat16


@needs_bf16
def test_tuning_with_bf16_prices_the_casts_and_reports_the_error(tmp_path):
    model = _model()
    s = Session.from_onnx(model, db=str(tmp_path / "db.sqlite"))
    s.tune()
    assert s.low_precision == [] and not any(":bfloat16:" in d for d in s.plan.choice.values())
    s.tune(precisions=["bfloat16"])
    assert s.precisions == ("float32", "bfloat16")
    # Every cast the selection may need was timed: a finite cost for each.
    casts = {k: v for k, v in s.profiled.adapt.items() if k[1].dtype != k[2].dtype}
    assert casts and all(np.isfinite(r.median) for r in casts.values())
    # Pinned onto bfloat16, the plan feeds it bfloat16 (its producer writes it so, or a cast makes
    # it), and the outputs stay close to ORT's.  Its reader is pinned onto a float32 routine, so
    # that a cast is certain: else the plan may convert only inside routines (a float32-input
    # first layer, a float32-output last one) and have no cast adapt at all.
    pinned = list(s.graph)[2]
    reader = s.graph.consumers(pinned.outputs[0])[0]
    float32 = next(d for d, r in routines.routines_for(reader.op).items() if d.startswith("cpu:float32:nhwc/")
                   and r.available() and r.applies(reader, s.graph.input_specs(reader)))
    s.pin("2", BF16_1X1).pin(reader.name, float32).retune()
    assert s.plan.choice[pinned.name] == BF16_1X1 and s.low_precision == ["bfloat16"]
    x = pinned.inputs[0]
    written = s.plan.written[x]
    want = Format("bfloat16", "nhwc")
    assert written == want or (x, written, want) in set(s.plan.adapts)
    assert any(a.dtype != b.dtype for _, a, b in s.plan.adapts)   # somewhere the plan casts
    feeds = s.random_inputs()
    ort = run_onnxruntime(model, feeds)
    err = compare([s.run(feeds)], [ort])
    assert err.cosine > 0.9999 and err.max_rel < tolerance(1), err
    reported = s.precision_error()
    assert reported.samples == 3 and reported.cosine > 0.9999 and reported.top1 is not None
    assert 0 < reported.max_abs < 0.1


def test_error_report_against_numpy():
    ref = [{"y": np.array([[1.0, 2.0, 3.0], [3.0, 1.0, 0.0]], np.float32)}]
    out = [{"y": np.array([[1.0, 2.5, 2.0], [3.0, 1.0, 0.0]], np.float32)}]
    e = compare(out, ref)
    assert e.max_abs == pytest.approx(1.0) and e.max_rel == pytest.approx(1 / 3)
    a, b = out[0]["y"].ravel().astype(np.float64), ref[0]["y"].ravel()
    assert e.cosine == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert e.top1 == 0.5   # row 0's argmax moved from 2 to 1
    nan = [{"y": np.array([[np.nan, 2.0, 3.0], [3.0, 1.0, 0.0]], np.float32)}]
    assert compare(nan, ref).max_abs == np.inf
    assert PrecisionError.from_dict(e.to_dict()) == e


@needs_bf16
def test_cli_tune_with_bf16_writes_the_error_and_run_checks_at_its_tolerance(tmp_path, capsys):
    src, out = tmp_path / "m.onnx", tmp_path / "t.onnx"
    src.write_bytes(_model().SerializeToString())
    db = str(tmp_path / "db.sqlite")
    assert main(["tune", str(src), "-o", str(out), "--db", db, "--runs", "3", "--precision", "bf16",
                 "--pin", f"2={BF16_1X1}"]) == 0
    text = capsys.readouterr().out
    assert "precision: " in text and "in bfloat16" in text and "cosine" in text
    s = Session.load(str(out))
    assert s.precisions == ("float32", "bfloat16") and s.precision is not None and s.precision.cosine > 0.9999
    assert s.plan.choice[list(s.graph)[2].name] == BF16_1X1
    assert main(["run", str(out), "--check"]) == 0
    text = capsys.readouterr().out
    n = sum(":bfloat16:" in d for d in s.plan.choice.values())
    weighted = rounding_layers(s.plan.choice)   # n, or more where the plan has Winograd layers
    assert weighted >= n
    assert (f"{n} layer(s) compute in bfloat16: --check uses rtol {round(tolerance(weighted), 4)} "
            f"= 4 x 2^-8 x sqrt({weighted:g})") in text
    assert "check passed" in text
    assert main(["run", str(out), "--check", "--rtol", "1e-6", "--atol", "1e-7"]) == 1   # bfloat16 is not exact
    capsys.readouterr()
    assert main(["tune", str(src), "-o", str(out), "--db", db, "--precision", "fp8"]) == 2
    assert "--precision: unknown precision 'fp8'" in capsys.readouterr().err


@needs_bf16
def test_bf16_buffers_take_two_bytes_an_element(tmp_path):
    """The memory planner sizes each buffer by its format's data type."""
    graph = workbench.load(_model().SerializeToString())
    names = [l.name for l in graph]
    s = Session(graph, db=str(tmp_path / "db.sqlite"))
    s.pin(names[2], BF16_1X1)
    s.tune()
    model = s.compile()
    bf = {k: v for k, v in model.memory.values.items() if k[1].dtype == "bfloat16"}
    assert bf and all(v.nbytes == 2 * int(np.prod(v.shape)) and v.dtype == "bfloat16" for v in bf.values())


def test_tolerance_grows_with_the_square_root_of_the_layers():
    assert tolerance(1) == pytest.approx(4 * 2 ** -8) and tolerance(36) == pytest.approx(6 * tolerance(1))
    assert tolerance(0) == tolerance(1)


def test_winograd_layers_weigh_their_amplified_rounding():
    """F(2x2,3x3)'s first-order error bound with every magnitude 1: 64/9 a direct 3x3's."""
    from workbench.routines.conv_winograd import G_MAT
    bt = np.abs(np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], float))
    at = np.abs(np.array([[1, 1, 1, 0], [0, 1, -1, -1]], float))
    g = np.abs(G_MAT[2])
    bound = at @ ((bt @ np.ones((4, 4)) @ bt.T) * (g @ np.ones((3, 3)) @ g.T)) @ at.T
    assert np.allclose(bound / 9, routines.error_weight("cpu:bfloat16:nhwc/winograd2_bf16"))
    plan = {"a": "cpu:bfloat16:nhwc/winograd2_bf16_f32in", "b": "cpu:bfloat16:nhwc/im2col_bf16",
            "c": "cpu:float32:nhwc/im2col"}
    assert rounding_layers(plan) == pytest.approx(1 + 64 / 9)


@needs_bf16
@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v2", "mobilenet_v3_large", "vgg16"])
def test_zoo_models_run_in_bfloat16_with_fallbacks_within_the_tolerance(name, tmp_path, capsys):
    """Every zoo model under --routine 'cpu:bfloat16:*': the layers no bfloat16 routine serves are
    reported as fallbacks, and the outputs stay within the plan's derived tolerance of ONNX Runtime."""
    path = tmp_path / f"{name}.onnx"
    assert main(["zoo", name, "-o", str(path), "--resolution", "64"]) == 0
    capsys.readouterr()
    code = main(["run", str(path), "--routine", "cpu:bfloat16:*", "--check"])
    text = capsys.readouterr().out
    n = int(text.split(" layer(s) compute in bfloat16")[0].rsplit("\n", 1)[-1])
    # the layers left in float32 are named; with none left, every layer is a bfloat16 one
    assert n >= 10 and ("no cpu:bfloat16:* routine applies" in text or n == len(list(workbench.load(str(path)))))
    assert code == 0 and "check passed" in text, text[-2000:]


def test_a_cpu_without_bf16_gets_no_bf16_routine_and_is_told_why(monkeypatch, tmp_path, capsys):
    from workbench.routines import conv_bf16
    monkeypatch.setattr(conv_bf16, "_kernels", lambda *name: None)
    graph = workbench.load(_model().SerializeToString())
    for layer in graph:
        assert not any(r.dtype == "bfloat16" for r in routines.applicable(graph, layer, None))
    notes = routines.precision_notes(("float32", "bfloat16"))
    assert len(notes) == 1 and "no bfloat16 routine is offered" in notes[0] and "avx512_bf16" in notes[0]
    src = tmp_path / "m.onnx"
    src.write_bytes(_model().SerializeToString())
    assert main(["profile", str(src), "--db", str(tmp_path / "db.sqlite"), "--precision", "bf16"]) == 0
    assert "note: no bfloat16 routine is offered" in capsys.readouterr().out


@needs_bf16
def test_a_bf16_plan_exports_reloads_and_gives_the_same_outputs(tmp_path):
    model = _model()
    s = Session.from_onnx(model, db=str(tmp_path / "db.sqlite"))
    s.pin("2", BF16_1X1)
    s.tune(precisions=["bf16"])
    s.precision_error()
    path = tmp_path / "t.onnx"
    s.export(str(path), measure_runs=0)
    back = Session.load(str(path))
    assert back.plan.choice == s.plan.choice and back.low_precision == ["bfloat16"]
    assert back.precision == s.precision
    feeds = s.random_inputs()
    want, got = s.run(feeds), back.run(feeds)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    # ONNX Runtime runs the file as written: float32 weights, float32 outputs close to ours.
    import onnx
    saved = onnx.load(str(path))
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in saved.graph.initializer)
    ort = run_onnxruntime(saved, feeds)
    assert compare([got], [ort]).max_rel < tolerance(len(back.plan.choice))
