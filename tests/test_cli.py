"""The ``workbench`` command: info, run (--input/--shape/--batch/--output-dir/--check), zoo, errors."""
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import helper

import workbench
from workbench.cli import main
from workbench.check import run_onnxruntime
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
    assert "check logits: max relative error vs onnxruntime" in text and "check passed" in text
    logits = np.load(out_dir / "logits.npy")
    expected = run_onnxruntime(onnx.load(tiny_path), {"input": x})["logits"]
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    # A tolerance no float computation meets: exit 1.
    assert main(["run", str(tiny_path), "--check", "--rtol", "1e-15"]) == 1


def test_run_with_shape_for_symbolic_dims(dynamic_path, capsys):
    assert main(["run", str(dynamic_path), "--shape", "image=2x3x17x9", "--check"]) == 0
    assert "features: (2, 5, 17, 9)" in capsys.readouterr().out
    assert main(["run", str(dynamic_path), "--batch", "1"]) == 2
    assert "dim 2 is symbolic" in capsys.readouterr().err


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
