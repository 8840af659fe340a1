"""The ``workbench`` command: info, run (--input/--shape/--batch/--output-dir/--check), zoo, errors."""
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import helper

import workbench
from workbench.cli.main import main
from workbench.onnx_io.ort import run_onnxruntime
from onnx_helpers import make_model


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny.onnx"
    assert main(["zoo", "tiny", "-o", str(path), "--batch", "2"]) == 0
    return path


@pytest.fixture
def dynamic_path(tmp_path, rng):
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    model = make_model([helper.make_node("Conv", ["image", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
                        helper.make_node("Relu", ["c"], ["features"], name="relu")],
                       [("image", ["N", 3, "H", "W"])], [("features", None)], [("w", w)])
    path = tmp_path / "dyn.onnx"
    onnx.save(model, path)
    return path


def test_info_shows_counts_before_and_after_fusion(tiny_path, capsys):
    assert main(["info", str(tiny_path)]) == 0
    out = capsys.readouterr().out
    graph = workbench.load(tiny_path)
    before = sum(graph.meta["source_op_counts"].values())
    assert f"{before} ONNX nodes -> {len(graph)} layers" in out
    assert "BatchNormalization 5" in out and "Conv+residual+Relu" in out
    for layer in graph:
        assert layer.name in out


def test_run_writes_outputs_and_checks(tiny_path, tmp_path, capsys):
    x = np.random.default_rng(5).standard_normal((2, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out_dir = tmp_path / "out"
    assert main(["run", str(tiny_path), "--input", f"input={tmp_path / 'x.npy'}", "--output-dir", str(out_dir),
                 "--check"]) == 0
    text = capsys.readouterr().out
    assert "check logits: passed, 0 of 2000 element(s) beyond" in text and "check passed" in text
    assert "top-1 agrees on 2/2 row(s)" in text
    logits = np.load(out_dir / "logits.npy")
    expected = run_onnxruntime(onnx.load(tiny_path), {"input": x})["logits"]
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    # A tolerance no float computation meets: exit 1.
    assert main(["run", str(tiny_path), "--check", "--rtol", "1e-15"]) == 1


def test_run_with_shape_for_symbolic_dims(dynamic_path, capsys):
    assert main(["run", str(dynamic_path), "--shape", "image=2x3x17x9", "--check"]) == 0
    assert "features: (2, 5, 17, 9)" in capsys.readouterr().out
    assert main(["run", str(dynamic_path), "--batch", "1"]) == 2
    err = capsys.readouterr().err
    assert "'image' (N, 3, H, W): dim 2 'H' (resolution), dim 3 'W' (resolution)" in err and "dim 0" not in err
    assert main(["run", str(dynamic_path), "--batch", "1", "--resolution", "12x7"]) == 0
    assert "features: (1, 5, 12, 7)" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["run", "{missing}"], "no such file"),
    (["run", "{garbage}"], "not a valid ONNX file"),
    (["run", "{truncated}"], "truncated"),
    (["info", "{truncated}"], "truncated"),
    (["run", "{tiny}", "--input", "pixels={x}"], "unknown input name"),
    (["run", "{tiny}", "--input", "input={x_wrong_shape}"], "fixed to 32"),
    (["run", "{tiny}", "--input", "input={x_float64}"], "dtype float64"),
    (["run", "{tiny}", "--input", "input={missing}"], "no such file"),
    (["zoo", "alexnet", "-o", "{missing}"], "unknown zoo model"),
])
def test_errors_exit_2_with_a_message(tiny_path, tmp_path, capsys, args, message):
    data = tiny_path.read_bytes()
    files = {"tiny": tiny_path, "missing": tmp_path / "missing.onnx", "garbage": tmp_path / "garbage.onnx",
             "truncated": tmp_path / "truncated.onnx", "x": tmp_path / "x.npy",
             "x_wrong_shape": tmp_path / "xs.npy", "x_float64": tmp_path / "xd.npy"}
    files["garbage"].write_bytes(b"\x00\xffnot protobuf at all\x12\x34" * 7)
    files["truncated"].write_bytes(data[: len(data) - 100])
    np.save(files["x"], np.zeros((2, 3, 32, 32), np.float32))
    np.save(files["x_wrong_shape"], np.zeros((2, 3, 31, 32), np.float32))
    np.save(files["x_float64"], np.zeros((2, 3, 32, 32)))
    code = main([a.format(**files) for a in args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("workbench: error:") and message in err, err
    assert "Traceback" not in err


def test_unsupported_ops_listed_by_info(tmp_path, capsys):
    model = make_model([helper.make_node("NonZero", ["x"], ["y"], name="nz"),
                        helper.make_node("Einsum", ["x", "x"], ["z"], name="ein", equation="ij,ij->ij")],
                       [("x", [2, 2])], [("y", None), ("z", None)])
    path = tmp_path / "bad.onnx"
    onnx.save(model, path)
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert "NonZero: nz" in err and "Einsum: ein" in err


def test_console_script_runs(tiny_path):
    result = subprocess.run([sys.executable, "-m", "workbench", "run", str(tiny_path), "--check"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "check passed" in result.stdout


# -- --check on a detector-like graph (outputs about 1e-7) ------------------------------------
@pytest.fixture
def detector_path(tmp_path):
    from test_check import detector
    path = tmp_path / "det.onnx"
    onnx.save(detector(), path)
    return path


def test_check_passes_on_a_detector_and_fails_on_a_perturbed_one(detector_path, tmp_path, capsys, monkeypatch):
    from test_check import detector
    import workbench.onnx_io.ort
    out_dir = tmp_path / "out"
    assert main(["run", str(detector_path), "--check", "--output-dir", str(out_dir)]) == 0
    text = capsys.readouterr().out
    assert "check maps: passed" in text and "check prob: passed" in text and "check passed" in text
    assert 1e-8 < np.abs(np.load(out_dir / "prob.npy")).max() < 1e-6
    # ONNX Runtime given a copy with one weight 1% off (the same file otherwise): exit 1, naming elements.
    real = workbench.onnx_io.ort.run_onnxruntime
    monkeypatch.setattr(workbench.onnx_io.ort, "run_onnxruntime",
                        lambda model, feeds, threads=2, optimize=True: real(detector(perturb=1.01), feeds, threads,
                                                                              optimize))
    assert main(["run", str(detector_path), "--check", "--output-dir", str(out_dir)]) == 1
    captured = capsys.readouterr()
    assert "check FAILED: maps" in captured.err and "check prob: passed" in captured.out
    ours = np.load(out_dir / "maps.npy")
    x = workbench.random_inputs(workbench.load(detector_path), seed=0)
    ref = real(detector(perturb=1.01), x)["maps"]
    excess = np.abs(ours.astype(np.float64) - ref) - 1e-4 * (np.abs(ref.astype(np.float64)).max() + np.abs(ref))
    worst = np.unravel_index(np.argmax(excess), ref.shape)
    n_failed = int((excess > 0).sum())
    assert f"check maps: FAILED, {n_failed} of {ref.size} element(s)" in captured.out
    assert f"  [{','.join(map(str, worst))}] ours {ours[worst]:.9g}  ort {ref[worst]:.9g}" in captured.out


# -- image inputs ---------------------------------------------------------------------------------
def _passthrough(tmp_path, shape, name="pass.onnx", dtype=onnx.TensorProto.FLOAT):
    """A model whose output is its input (Mul by 1), so the output file is the preprocessed image."""
    model = make_model([helper.make_node("Mul", ["x", "one"], ["y"], name="mul")], [("x", shape, dtype)],
                       [("y", None, dtype)], [("one", np.ones((), onnx.helper.tensor_dtype_to_np_dtype(dtype)))])
    path = tmp_path / name
    onnx.save(model, path)
    return path


def _png(tmp_path, h, w, mode="RGB", seed=3):
    from PIL import Image
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (h, w, 3) if mode == "RGB" else (h, w), dtype=np.uint8)
    path = tmp_path / f"img_{mode}_{h}x{w}.png"
    Image.fromarray(pixels, mode).save(path)
    return path, pixels


def test_image_input_nchw_scale_mean_std(tmp_path, capsys):
    png, pixels = _png(tmp_path, 13, 21)
    model = _passthrough(tmp_path, [1, 3, 13, 21])
    assert main(["run", str(model), "--input", f"x={png}", "--scale", "1/255", "--mean", "0.485,0.456,0.406",
                 "--std", "0.229,0.224,0.225", "--output-dir", str(tmp_path / "o"), "--check"]) == 0
    expected = ((pixels / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).transpose(2, 0, 1)[None]
    np.testing.assert_allclose(np.load(tmp_path / "o" / "y.npy"), expected, rtol=1e-5, atol=1e-5)


def test_image_input_nhwc_bgr_resized_and_batched(tmp_path):
    from PIL import Image
    png, pixels = _png(tmp_path, 30, 17)
    model = _passthrough(tmp_path, ["N", "H", "W", 3])
    assert main(["run", str(model), "--input", f"x={png}", "--resolution", "10x14", "--batch", "2", "--bgr",
                 "--mean", "100,110,120", "--output-dir", str(tmp_path / "o")]) == 0
    resized = np.asarray(Image.fromarray(pixels).resize((14, 10), Image.BILINEAR), np.float32)
    expected = resized[..., ::-1] - np.array([100, 110, 120], np.float32)   # mean in BGR order
    got = np.load(tmp_path / "o" / "y.npy")
    assert got.shape == (2, 10, 14, 3)
    np.testing.assert_array_equal(got[0], expected)
    np.testing.assert_array_equal(got[1], expected)


def test_image_input_grayscale_and_uint8(tmp_path):
    png, pixels = _png(tmp_path, 9, 12, mode="L")
    assert main(["run", str(_passthrough(tmp_path, [1, 1, 9, 12])), "--input", f"x={png}", "--scale", "0.5",
                 "--output-dir", str(tmp_path / "g")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "g" / "y.npy"), pixels[None, None] * np.float32(0.5))
    rgb, pix = _png(tmp_path, 9, 12)
    model = _passthrough(tmp_path, [1, 3, 9, 12], "u8.onnx", onnx.TensorProto.UINT8)
    assert main(["run", str(model), "--input", f"x={rgb}", "--output-dir", str(tmp_path / "u")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "u" / "y.npy"), pix.transpose(2, 0, 1)[None])


@pytest.mark.parametrize("shape, extra, message", [
    ([1, 3, 8, 8], [], "not a readable image"),                       # garbage bytes named .png
    ([1, 2, 8, 8], [], "has 2 channels"),
    ([1, 3, 8, 8], ["--mean", "1,2"], "--mean has 2 values, the input has 3 channel(s)"),
    ([1, 3, 8, 8], ["--std", "0.5,0,1"], "--std has a zero"),
    ([1, 3, 8, 8], ["--scale", "one"], "--scale: expected comma-separated numbers"),
    ([3, 8, 8], [], "rank 3"),
])
def test_image_input_errors_exit_2(tmp_path, capsys, shape, extra, message):
    png, _ = _png(tmp_path, 8, 8)
    if message == "not a readable image":
        png.write_bytes(b"\x89PNG but not really" * 3)
    assert main(["run", str(_passthrough(tmp_path, shape)), "--input", f"x={png}", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("workbench: error: ") and message in err and err.count("\n") == 1, err


# -- symbolic dims: one error with every dim, and the flags it suggests work -----------------------
@pytest.fixture
def two_input_path(tmp_path, rng):
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    model = make_model([helper.make_node("Conv", ["image", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
                        helper.make_node("Add", ["c", "mask"], ["y"], name="add")],
                       [("image", ["N", 3, "H", "W"]), ("mask", ["N", 4, "H", "W"])], [("y", None)], [("w", w)])
    path = tmp_path / "two.onnx"
    onnx.save(model, path)
    return path


def test_symbolic_dims_one_error_and_its_flags_work(two_input_path, capsys):
    assert main(["run", str(two_input_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("workbench: error: 6 symbolic input dimension(s) have no value")
    for line in ("'image' (N, 3, H, W): dim 0 'N' (batch), dim 2 'H' (resolution), dim 3 'W' (resolution)",
                 "'mask' (N, 4, H, W): dim 0 'N' (batch), dim 2 'H' (resolution), dim 3 'W' (resolution)"):
        assert line in err
    assert "--batch N --resolution R (or --resolution HxW)" in err and "resolution=R or (H, W)" in err
    assert "--shape image=Nx3xHxW --shape mask=Nx4xHxW" in err
    # The suggestions, with sizes in place of the names, run and check.
    for flags, shape in ((["--batch", "2", "--resolution", "6x9"], (2, 4, 6, 9)),
                         (["--batch", "1", "--resolution", "7"], (1, 4, 7, 7)),
                         (["--shape", "image=1x3x5x8", "--shape", "mask=1x4x5x8"], (1, 4, 5, 8))):
        assert main(["run", str(two_input_path), *flags, "--check"]) == 0, flags
        out = capsys.readouterr().out
        assert f"y: {shape} float32" in out and "check passed" in out
    for command in ("info", "routines"):
        assert main([command, str(two_input_path), "--batch", "2", "--resolution", "6x9"]) == 0


@pytest.mark.parametrize("value", ["0", "3x", "2x3x4", "ax4"])
def test_bad_resolution_is_an_argparse_error(two_input_path, capsys, value):
    with pytest.raises(SystemExit) as e:
        main(["run", str(two_input_path), "--resolution", value])
    assert e.value.code == 2 and "expected R or HxW" in capsys.readouterr().err


def test_demo_checks_the_tuned_file_elementwise(tmp_path, capsys):
    out = tmp_path / "tiny.tuned.onnx"
    assert main(["demo", "tiny", "--resolution", "16", "-o", str(out), "--db", str(tmp_path / "db.sqlite"),
                 "--threads", "1", "--runs", "1"]) == 0
    text = capsys.readouterr().out
    for where in ("the original", "the tuned file"):
        assert f"vs ONNX Runtime on {where}: check logits: passed, 0 of 1000 element(s)" in text
    assert out.exists()
