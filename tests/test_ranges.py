"""Calibration of activation ranges for qint8 (workbench.tuning.ranges): the observer's extremes
against ONNX Runtime's intermediate tensors, each method against a brute-force or NumPy
reference, the parameters' exact zero, and the table in the tuned file."""
import numpy as np
import onnx
import pytest
from onnx import helper

import workbench
from onnx_helpers import make_model
from workbench.errors import WorkbenchError
from workbench.onnx_io.ort import run_onnxruntime
from workbench.session import Session
from workbench.tuning import ranges


def _model():
    rng = np.random.default_rng(2)
    w = lambda *s: (rng.standard_normal(s) / np.sqrt(np.prod(s[1:]))).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c0"], ["r0"]),
             helper.make_node("Conv", ["r0", "w1"], ["c1"], kernel_shape=[1, 1]),
             helper.make_node("Add", ["c1", "x"], ["s"]),
             helper.make_node("GlobalAveragePool", ["s"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "wf"], ["y"], transB=1)]
    inits = [("w0", w(16, 8, 3, 3)), ("b0", w(16)), ("w1", w(8, 16, 1, 1)), ("wf", w(5, 8))]
    return make_model(nodes, [("x", [1, 8, 10, 10])], [("y", [1, 5])], inits)


def _feeds(n, seed=0):
    rng = np.random.default_rng(seed)
    return [{"x": (rng.standard_normal((1, 8, 10, 10)) * 2 + 0.3).astype(np.float32)} for _ in range(n)]


def _ort_tensors(model, feeds, names):
    """Every named tensor of ``model`` on ``feeds``, computed by ONNX Runtime (made outputs)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for n in names:
        if n not in [o.name for o in m.graph.output]:
            m.graph.output.append(helper.make_empty_tensor_value_info(n))
    got = [run_onnxruntime(m, f) for f in feeds]
    return {n: np.concatenate([g[n].ravel() for g in got]) for n in names}


def test_minmax_extremes_are_onnxruntimes(rng):
    model = _model()
    graph = workbench.load(model.SerializeToString())
    feeds = _feeds(3)
    stats = ranges.observe(graph, feeds)
    onnx_names = {o for node in model.graph.node for o in node.output} | {"x"}
    names = sorted(set(stats) & onnx_names)
    assert {"x", "y"} <= set(names) and len(names) >= 4, names
    ref = _ort_tensors(model, feeds, names)
    for n in names:
        assert stats[n].lo == pytest.approx(float(ref[n].min()), rel=1e-4, abs=1e-5), n
        assert stats[n].hi == pytest.approx(float(ref[n].max()), rel=1e-4, abs=1e-5), n
        assert stats[n].count == ref[n].size
        lo, hi = ranges.clip_range(stats[n], "minmax")
        assert (lo, hi) == (stats[n].lo, stats[n].hi)


def _stats(x):
    st = ranges.Stats()
    st.see(x)
    st.fill(x)
    return st


def test_percentile_is_numpys_within_a_bin(rng):
    x = np.concatenate([rng.standard_normal(200000), rng.uniform(20, 50, 30)]).astype(np.float32)
    st = _stats(x)
    width = (st.hi - st.lo) / ranges.BINS
    for p in (99.0, 99.9, 99.99):
        lo, hi = ranges.clip_range(st, "percentile", percentile=p)
        assert abs(lo - np.percentile(x, 100 - p)) <= 1.01 * width, p
        assert abs(hi - np.percentile(x, p)) <= 1.01 * width, p
    assert ranges.clip_range(st, "percentile", percentile=100) == pytest.approx((st.lo, st.hi))


def _true_mse(x, lo, hi):
    p = ranges.params(lo, hi)
    return float(np.mean((p.dequantize(p.quantize(x)) - x) ** 2))


@pytest.mark.parametrize("kind", ["gauss_outliers", "relu", "uniform"])
def test_mse_picks_the_candidate_brute_force_finds_best(kind, rng):
    x = {"gauss_outliers": np.concatenate([rng.standard_normal(50000), [25.0, -18.0, 30.0]]),
         "relu": np.maximum(rng.standard_normal(50000) * 3, 0),
         "uniform": rng.uniform(-1, 3, 50000)}[kind].astype(np.float32)
    st = _stats(x)
    lo, hi = ranges.clip_range(st, "mse")
    brute = min(_true_mse(x, st.lo * f if st.lo < 0 else st.lo, st.hi * f) for f in ranges.SHRINK)
    assert _true_mse(x, lo, hi) <= 1.05 * brute + 1e-9, (lo, hi)
    assert _true_mse(x, lo, hi) <= _true_mse(x, st.lo, st.hi) + 1e-9


def test_entropy_clips_rare_outliers_and_keeps_a_uniform_range(rng):
    heavy = np.concatenate([np.abs(rng.standard_normal(100000)), [60.0, 80.0]]).astype(np.float32)
    lo, hi = ranges.clip_range(_stats(heavy), "entropy")
    assert lo == pytest.approx(float(heavy.min())) and 3.0 < hi < 40.0   # the end on zero's side stays
    flat = rng.uniform(0, 4, 100000).astype(np.float32)
    lo, hi = ranges.clip_range(_stats(flat), "entropy")
    assert hi >= 0.95 * flat.max()


@pytest.mark.parametrize("lo,hi,dtype", [(-1.0, 2.0, "uint8"), (0.5, 3.0, "uint8"), (-4.0, -1.0, "uint8"),
                                         (-1.0, 2.0, "int8"), (0.0, 0.0, "uint8")])
def test_params_hold_zero_exactly_and_cover_the_range(lo, hi, dtype):
    p = ranges.params(lo, hi, dtype)
    assert p.dequantize(p.quantize(np.float32(0.0))) == 0.0
    a, b = min(lo, 0.0), max(hi, 0.0)
    if b > a:
        assert p.scale[0] == pytest.approx((b - a) / 255)
        x = np.array([a, b], np.float32)
        assert np.abs(p.dequantize(p.quantize(x)) - x).max() <= p.scale[0] / 2 + 1e-7


def test_calibrate_fills_the_table_and_the_tuned_file_keeps_it(tmp_path):
    model = _model()
    s = Session.from_onnx(model, db=str(tmp_path / "db.sqlite"))
    table = ranges.calibrate(s.graph, _feeds(2), method="percentile", percentile=99.9)
    assert set(table) <= set(s.graph.tensor_names()) | set(s.graph.inputs)
    assert all(p.dtype == "uint8" and p.source == "percentile 99.9 over 2 input(s)" for p in table.values())
    assert len(s.graph.quant) == len(table) and "x" in table
    s.tune()
    s.export(str(tmp_path / "t.onnx"), measure_runs=0)
    back = Session.load(str(tmp_path / "t.onnx"))
    assert back.graph.quant.to_record() == s.graph.quant.to_record()


def test_bad_calibration_requests_are_clear_errors():
    graph = workbench.load(_model().SerializeToString())
    with pytest.raises(WorkbenchError, match="calibration method 'kl'"):
        ranges.observe(graph, _feeds(1), method="kl")
    with pytest.raises(WorkbenchError, match="no inputs"):
        ranges.observe(graph, [])
    st = ranges.observe(graph, _feeds(1))["x"]
    with pytest.raises(WorkbenchError, match="needs histograms"):
        ranges.clip_range(st, "mse")
    with pytest.raises(WorkbenchError, match="percentile must lie"):
        ranges.clip_range(_stats(np.arange(10, dtype=np.float32)), "percentile", percentile=30)
    with pytest.raises(WorkbenchError, match="input 'x'.*shape"):
        ranges.observe(graph, [{"x": np.zeros((1, 3, 10, 10), np.float32)}])


def test_nan_and_infinity_do_not_enter_a_range():
    x = np.array([np.nan, -np.inf, -2.0, 0.5, 3.0, np.inf], np.float32)
    st = _stats(x)
    assert (st.lo, st.hi, st.count) == (-2.0, 3.0, 3)
    assert st.hist.sum() == 3
    for method in ranges.METHODS:
        lo, hi = ranges.clip_range(st, method)
        assert np.isfinite([lo, hi]).all() and lo <= 0 < hi
