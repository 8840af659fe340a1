"""New input sizes (session_shapes.py): a session tuned at one width runs other widths on plans
made on first use (a NewShapeWarning says what was measured and how long it took), kept for later
runs, each matching ONNX Runtime; records already in the profile database are not measured again;
a session without its model says how to get one."""
import warnings

import numpy as np
import pytest
from onnx import helper

from onnx_helpers import make_model
from workbench.errors import ShapeError
from workbench.onnx_io.ort import relative_error, run_onnxruntime
from workbench.session import Session
from workbench.session_shapes import NewShapeWarning
from workbench.tuning.profiledb import ProfileDatabase


def _model():
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[0, 0, 0, 0]),
             helper.make_node("ReduceMean", ["c2"], ["y"], axes=[2], keepdims=0)]
    inits = [("w1", rng.standard_normal((8, 3, 3, 3)).astype(np.float32)), ("b1", rng.standard_normal(8).astype(np.float32)),
             ("w2", rng.standard_normal((6, 8, 1, 1)).astype(np.float32))]
    return make_model(nodes, [("x", [1, 3, 8, "width"])], [("y", None)], inits, opset=13)


def _run(session, x):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = session.run({"x": x})["y"]
    return out, [c for c in caught if issubclass(c.category, NewShapeWarning)]


@pytest.mark.parametrize("io_format", ["nchw", "nhwc"])
def test_other_widths_are_planned_once_and_kept(tmp_path, io_format):
    model = _model()
    s = Session.from_onnx(model, num_threads=2, db=ProfileDatabase(tmp_path / "p.sqlite", num_threads=2),
                          shapes={"x": (1, 3, 8, 24)}, io_format=io_format)
    s.tune()
    rng = np.random.default_rng(1)
    for width, planned in ((24, False), (40, True), (17, True), (40, False), (17, False), (24, False)):
        x = rng.standard_normal((1, 3, 8, width)).astype(np.float32)
        got, new = _run(s, x.transpose(0, 2, 3, 1).copy() if io_format == "nhwc" else x)
        assert bool(new) == planned, (width, [str(w.message) for w in new])
        if planned:
            assert f"(1, 3, 8, {width})" in str(new[0].message) and "measured" in str(new[0].message)
        want = run_onnxruntime(model, {"x": x})["y"]
        assert got.shape == want.shape == (1, 6, width) and relative_error(got, want) <= 1e-4
    assert sorted(k[0][1][3] for k in s.shape_plans) == [17, 40]
    assert s.for_shapes({"x": (1, 3, 8, 40)}).plan is not None and s.for_shapes({"x": (1, 3, 8, 24)}) is s
    # another session on the same database: the width's records are there, nothing is measured
    again = Session.from_onnx(model, num_threads=2, db=s.db, shapes={"x": (1, 3, 8, 24)}, io_format=io_format)
    again.tune()
    x = np.zeros((1, 3, 8, 40), np.float32)
    _, new = _run(again, x.transpose(0, 2, 3, 1).copy() if io_format == "nhwc" else x)
    assert "(0 profile record(s) measured" in str(new[0].message)


def test_shapes_of_an_unknown_input_and_a_session_without_its_model(tmp_path):
    s = Session.from_onnx(_model(), num_threads=2, db=ProfileDatabase(tmp_path / "p.sqlite", num_threads=2),
                          shapes={"x": (1, 3, 8, 24)})
    with pytest.raises(ShapeError, match=r"unknown input\(s\) \['z'\]"):
        s.for_shapes({"z": (1, 2)})
    bare = Session(s.graph, num_threads=2, db=ProfileDatabase(tmp_path / "q.sqlite", num_threads=2))
    bare.tune()
    with pytest.raises(ShapeError, match="Session.from_onnx"):
        bare.run({"x": np.zeros((1, 3, 8, 30), np.float32)})


def test_a_tuned_file_holds_several_shapes(tmp_path, capsys):
    """``workbench tune --shape x=.. --shape x=..`` keeps a plan per shape; the file runs each
    without profiling (no NewShapeWarning), another shape after planning it, and ONNX Runtime
    runs the file at any width (its input keeps the symbolic dimension)."""
    import onnx
    from workbench.cli.main import main
    from workbench.session import Session
    src, out = tmp_path / "m.onnx", tmp_path / "tuned.onnx"
    onnx.save(_model(), src)
    db = str(tmp_path / "p.sqlite")
    assert main(["tune", str(src), "--shape", "x=1x3x8x24", "--shape", "x=1x3x8x40", "-o", str(out), "--db", db,
                 "--threads", "2", "--runs", "0"]) == 0
    assert "also tuned for input shapes {'x': (1, 3, 8, 40)}" in capsys.readouterr().out
    with warnings.catch_warnings():
        warnings.simplefilter("error", NewShapeWarning)   # the stored shapes: no planning
        loaded = Session.load(out, num_threads=2)
        for width in (24, 40):
            x = np.random.default_rng(width).standard_normal((1, 3, 8, width)).astype(np.float32)
            got = loaded.run({"x": x})["y"]
            assert relative_error(got, run_onnxruntime(_model(), {"x": x})["y"]) <= 1e-4
            assert relative_error(got, run_onnxruntime(str(out), {"x": x})["y"]) <= 1e-4
    assert loaded.for_shapes({"x": (1, 3, 8, 40)}).plan.method.startswith("loaded")
    _, new = _run(loaded, np.zeros((1, 3, 8, 31), np.float32))
    assert new and "(1, 3, 8, 31)" in str(new[0].message)
    # the command line: a held shape runs as stored, another is planned (and says so), both checked
    assert main(["run", str(out), "--shape", "x=1x3x8x40", "--check", "--threads", "2"]) == 0
    assert "check passed" in capsys.readouterr().out
    with pytest.warns(NewShapeWarning, match=r"\(1, 3, 8, 33\)"):
        assert main(["run", str(out), "--shape", "x=1x3x8x33", "--check", "--threads", "2"]) == 0
