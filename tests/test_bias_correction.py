"""Bias correction for weights rounded to bfloat16 (workbench.routines.bias_correction): the
shift against a brute-force sum, each weight-rounding routine exact on an input at its calibrated
mean, the means calibrated from the inputs, the error it takes away on inputs it never saw, and
the tuned file and the CLI that carry it."""
import onnx
import numpy as np
import pytest
from onnx import helper

from onnx_helpers import make_model
from routine_helpers import conv_graph, run_with_routine
from workbench.cli.main import main
from workbench.errors import WorkbenchError
from workbench.routines import bias_correction
from workbench.routines.bias_correction import MEAN
from workbench.runtime import cpu
from workbench.session import Session
from workbench.tuned_file import TunedModelError
from workbench.tuning import input_stats
from workbench.tuning.precision import compare

NATIVE = cpu.kernel_module("gemm_bf16", "avx512bf16") is not None
needs_bf16 = pytest.mark.skipif(not NATIVE, reason="this CPU lacks AVX512-BF16: no cpu:bfloat16 routine applies")


def _bf16_exact(x):
    return np.asarray(x, np.float32).astype("bfloat16").astype(np.float32)


def _layer(w, group=1, mean=None):
    graph = conv_graph((1, w.shape[1] * group, 6, 6), w, bias=np.linspace(-1, 1, w.shape[0], dtype=np.float32),
                       attrs=dict(group=group))
    layer = graph.layer("conv")
    if mean is not None:
        layer.meta[MEAN] = mean
    return graph, layer


@pytest.mark.parametrize("group", [1, 2, 8])
def test_the_shift_is_the_rounding_weighted_by_the_means(group, rng):
    w = rng.standard_normal((8, 16 // group, 3, 3)).astype(np.float32)
    mean = rng.uniform(0, 2, 16).astype(np.float32)
    graph, layer = _layer(w, group, mean)
    bias = layer.consts[2]
    got = bias_correction.conv(layer, w, bias)
    want = np.array(bias, np.float64)
    per = 8 // group
    for o in range(8):
        g = o // per
        for c in range(w.shape[1]):
            for i in range(3):
                for j in range(3):
                    d = float(_bf16_exact(w[o, c, i, j])) - float(w[o, c, i, j])
                    want[o] -= d * float(mean[g * w.shape[1] + c])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    # no means, or means of another width: the bias stays the model's
    assert bias_correction.conv(_layer(w, group)[1], w, bias) is bias
    layer.meta[MEAN] = mean[:5]
    assert bias_correction.conv(layer, w, bias) is bias


CONV_ROUTINES = ["gemm1x1_bf16_f32io", "im2col_bf16_f32io", "implicit_bf16_f32io", "gemm1x1_amx_f32io",
                 "im2col_amx_f32io", "implicit_amx_f32io", "depthwise_dot_bf16_f32out"]


@needs_bf16
@pytest.mark.parametrize("name", CONV_ROUTINES)
def test_each_rounding_routine_is_exact_on_an_input_at_its_mean(name, rng):
    """An image whose every pixel is the calibrated mean (values bfloat16 holds exactly, no
    padding): the rounded weights with the corrected bias give float32's outputs to its own
    summation error; uncorrected, the rounding shows."""
    from workbench import routines
    depthwise = name.startswith("depthwise")
    c, m = (32, 32) if depthwise else (48, 40)
    k = 1 if name.startswith("gemm1x1") else 3
    w = rng.standard_normal((m, 1 if depthwise else c, k, k)).astype(np.float32)
    mean = _bf16_exact(rng.uniform(0.25, 2, c))
    graph, layer = _layer(w, c if depthwise else 1)
    descriptor = f"cpu:bfloat16:nhwc/{name}"
    if not routines.routines_for("Conv")[descriptor].applies(layer, graph.input_specs(layer)):
        pytest.skip(f"{descriptor} does not run on this CPU")
    feeds = {"x": np.broadcast_to(mean.reshape(1, c, 1, 1), (1, c, 6, 6)).copy()}
    errors = {}
    for corrected in (False, True):
        layer.meta.pop(MEAN, None)
        if corrected:
            layer.meta[MEAN] = mean
        ours, ref, used = run_with_routine(graph, descriptor, feeds=feeds)
        assert used == ["conv"]
        (key, want), = ref.items()
        errors[corrected] = float(np.abs(ours[key].astype(np.float64) - want).max() / np.abs(want).max())
    assert errors[True] < 2e-6, errors
    assert errors[False] > 50 * errors[True], errors


@needs_bf16
@pytest.mark.parametrize("op", ["Gemm", "MatMul"])
def test_products_are_exact_on_their_mean_row(op, rng):
    k, n = 96, 24
    b = rng.standard_normal((n, k) if op == "Gemm" else (k, n)).astype(np.float32)
    x = _bf16_exact(rng.uniform(0, 1, (1, k)))
    node = (helper.make_node("Gemm", ["x", "b", "c"], ["y"], transB=1) if op == "Gemm"
            else helper.make_node("MatMul", ["x", "b"], ["y"]))
    inits = [("b", b)] + ([("c", rng.standard_normal(n).astype(np.float32))] if op == "Gemm" else [])
    import workbench
    graph = workbench.load(make_model([node], [("x", [1, k])], [("y", [1, n])], inits).SerializeToString())
    layer, = list(graph)
    errors = {}
    for corrected in (False, True):
        layer.meta.pop(MEAN, None)
        if corrected:
            layer.meta[MEAN] = x[0]
        ours, ref, used = run_with_routine(graph, "cpu:bfloat16:nchw/gemm_bf16_f32io", feeds={"x": x})
        assert used == [layer.name]
        errors[corrected] = float(np.abs(ours["y"] - ref["y"]).max() / np.abs(ref["y"]).max())
    assert errors[True] < 2e-6 and errors[False] > 50 * errors[True], errors


def _relu_chain(c=64, hw=12, layers=4):
    rng = np.random.default_rng(5)
    nodes, inits, x = [], [], "x"
    for i in range(layers):
        inits += [(f"w{i}", (rng.standard_normal((c, c, 3, 3)) * np.sqrt(2 / (9 * c))).astype(np.float32)),
                  (f"b{i}", (0.1 * rng.standard_normal(c)).astype(np.float32))]
        nodes += [helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        x = f"r{i}"
    inits.append(("wf", (rng.standard_normal((10, c)) / np.sqrt(c)).astype(np.float32)))
    nodes += [helper.make_node("GlobalAveragePool", [x], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
              helper.make_node("Gemm", ["f", "wf"], ["y"], transB=1)]
    return make_model(nodes, [("x", [1, c, hw, hw])], [("y", [1, 10])], inits)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A ReLU chain tuned with every layer in bfloat16, calibrated on two given inputs."""
    model = _relu_chain()
    s = Session.from_onnx(model, db=str(tmp_path_factory.mktemp("bc") / "db.sqlite"), num_threads=2)
    calib = [{k: v + 0.5 for k, v in s.random_inputs(seed=i).items()} for i in (40, 41)]   # not centred, as activations are not
    s.tune(precisions=["bf16"], filters=["cpu:bfloat16:*"], calibration_inputs=calib)
    return model, s, calib


@needs_bf16
def test_tuning_calibrates_the_means_from_the_inputs(tuned):
    model, s, calib = tuned
    assert s.calibration == "2 given input(s)"
    first = s.graph.consumers("x")[0]
    np.testing.assert_allclose(first.meta[MEAN], np.mean([f["x"][0] for f in calib], axis=(0, 2, 3)), rtol=1e-5)
    # every layer whose weights bfloat16 rounds has its input's means, one per channel
    for layer in s.graph:
        n = bias_correction.channels(layer)
        assert (n is not None) == (MEAN in layer.meta), layer.name
        if n is not None:
            assert layer.meta[MEAN].shape == (n,) and np.isfinite(layer.meta[MEAN]).all()


@needs_bf16
def test_correction_takes_error_away_on_inputs_it_never_saw(tuned):
    from workbench.onnx_io.ort import run_onnxruntime
    model, s, _ = tuned
    assert all(":bfloat16:" in d for d in s.plan.choice.values() if "Conv" in d or "gemm" in d)
    feeds = [{k: v + 0.5 for k, v in s.random_inputs(seed=i).items()} for i in (7, 8, 9)]
    ref = [run_onnxruntime(model, f) for f in feeds]
    corrected = compare([s.run(f) for f in feeds], ref)
    saved = {layer.name: layer.meta[MEAN] for layer in s.graph if MEAN in layer.meta}
    input_stats.clear(s.graph)
    s._compiled = None
    try:
        plain = compare([s.run(f) for f in feeds], ref)
    finally:
        for name, mean in saved.items():
            s.graph.layer(name).meta[MEAN] = mean
        s._compiled = None
    # the shift is the same on every input: the outputs' direction gains most (the activations'
    # own rounding, which no bias takes away, keeps the largest single difference closer)
    assert 1 - corrected.cosine < 0.5 * (1 - plain.cosine), (corrected, plain)
    assert corrected.max_rel < plain.max_rel, (corrected, plain)


@needs_bf16
def test_the_tuned_file_keeps_the_means_and_the_outputs(tuned, tmp_path):
    model, s, _ = tuned
    path = tmp_path / "t.onnx"
    s.export(str(path), measure_runs=0)
    back = Session.load(str(path))
    assert back.calibration == s.calibration
    for layer in s.graph:
        if MEAN in layer.meta:
            np.testing.assert_array_equal(back.graph.layer(layer.name).meta[MEAN], layer.meta[MEAN])
    feeds = s.random_inputs(seed=3)
    want, got = s.run(feeds), back.run(feeds)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    saved = onnx.load(str(path))   # the file's weights and biases stay the model's
    assert {t.name: onnx.numpy_helper.to_array(t).dtype for t in saved.graph.initializer} == \
        {t.name: np.dtype(np.float32) for t in saved.graph.initializer}
    node = next(n for n in saved.graph.node if any(p.key == "workbench.input_mean" for p in n.metadata_props))
    prop = next(p for p in node.metadata_props if p.key == "workbench.input_mean")
    prop.value = prop.value[:12]
    with pytest.raises(TunedModelError, match=f"{node.name}.*workbench.input_mean.*malformed"):
        Session.load(saved.SerializeToString())


@needs_bf16
def test_calibration_inputs_are_checked(tuned):
    _, s, _ = tuned
    with pytest.raises(WorkbenchError, match="calibration input 1: .*'x'.*shape"):
        s.calibrate_means([s.random_inputs(), {"x": np.zeros((1, 3, 12, 12), np.float32)}])
    with pytest.raises(WorkbenchError, match="no inputs"):
        input_stats.collect(s.graph, [])


@needs_bf16
def test_cli_tune_calibrates_on_a_file(tmp_path, capsys):
    src, out = tmp_path / "m.onnx", tmp_path / "t.onnx"
    src.write_bytes(_relu_chain(c=32, hw=8, layers=2).SerializeToString())
    db = str(tmp_path / "db.sqlite")
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((2, 1, 3, 8, 8), np.float32))
    args = ["tune", str(src), "-o", str(out), "--db", db, "--runs", "0", "--precision", "bf16",
            "--routine", "cpu:bfloat16:*"]
    assert main(args + ["--calibration", str(bad)]) == 2
    assert "--calibration" in (err := capsys.readouterr().err) and "(samples, 1, 32, 8, 8)" in err
    np.savez(bad, y=np.zeros((2, 1, 32, 8, 8), np.float32))
    assert main(args + ["--calibration", str(bad)]) == 2
    assert "no array for input(s) ['x']" in capsys.readouterr().err
    bad.write_bytes(b"PK\x03\x04 truncated")
    assert main(args + ["--calibration", str(bad)]) == 2
    assert "cannot read it" in capsys.readouterr().err
    good = tmp_path / "calib.npz"
    np.savez(good, x=np.random.default_rng(0).uniform(0, 1, (3, 1, 32, 8, 8)).astype(np.float32))
    assert main(args + ["--calibration", str(good)]) == 0
    assert "biases corrected on 3 given input(s)" in capsys.readouterr().out
    assert Session.load(str(out)).calibration == "3 given input(s)"


@needs_bf16
def test_cli_tune_calibrates_on_images(tmp_path, capsys):
    from PIL import Image
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    w = np.random.default_rng(1).standard_normal((16, 3, 3, 3)).astype(np.float32)
    src, out = tmp_path / "m.onnx", tmp_path / "t.onnx"
    src.write_bytes(make_model(nodes, [("x", [1, 3, 8, 8])], [("y", [1, 16, 8, 8])], [("w", w)]).SerializeToString())
    pics = tmp_path / "pics"
    pics.mkdir()
    rng = np.random.default_rng(2)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(pics / f"{i}.png")
    assert main(["tune", str(src), "-o", str(out), "--db", str(tmp_path / "db.sqlite"), "--runs", "0",
                 "--precision", "bf16", "--routine", "cpu:bfloat16:*", "--calibration", str(pics),
                 "--scale", "1/255", "--mean", "0.5", "--bgr"]) == 0
    assert "biases corrected on 2 given input(s)" in capsys.readouterr().out
    s = Session.load(str(out))
    conv, = list(s.graph)
    want = np.mean([np.asarray(Image.open(pics / f"{i}.png"), np.float32)[..., ::-1] / 255 - 0.5 for i in range(2)],
                   axis=(0, 1, 2))
    np.testing.assert_allclose(conv.meta[MEAN], want, rtol=1e-5)
