"""The tuned-model file: export and load give back the same plan and outputs; the file is
standard ONNX that ONNX Runtime runs with the original model's outputs; it re-imports to the
same layers; its annotations are there; a file from another machine warns; corrupt files are
clear errors."""
import functools
import json
import warnings

import numpy as np
import onnx
import pytest
from onnx import helper

import workbench
from workbench.onnx_io import write as onnx_export
from workbench import tuned_file as tuned, zoo
from workbench.onnx_io.ort import relative_error, run_onnxruntime
from workbench.errors import ModelFileError
from workbench.tuning.profiledb import fingerprint, signature
from workbench.session import Session

from onnx_helpers import make_model

RTOL = 1e-4


@functools.lru_cache(maxsize=None)
def _zoo_bytes(name, resolution):
    return zoo.build(name, resolution=resolution).SerializeToString()


def zoo_model(name, resolution=64):
    """A zoo model (built once per test run: building calibrates BatchNorm, which takes seconds)."""
    return onnx.load_from_string(_zoo_bytes(name, resolution))


def assert_close(ours, ref, rtol=RTOL):
    assert set(ours) == set(ref)
    for k in ref:
        assert ours[k].shape == ref[k].shape, k
        assert relative_error(ours[k], ref[k]) <= rtol, (k, relative_error(ours[k], ref[k]))


def _plain(value):
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def assert_same_layers(graph, again):
    """Same layers in the same order: names, ops, attributes, constants, and profile signatures."""
    assert [l.name for l in again] == [l.name for l in graph]
    for a, b in zip(graph, again):
        assert a.op == b.op, a.name
        assert _plain(a.attrs) == _plain(b.attrs), a.name
        assert sorted(a.consts) == sorted(b.consts), a.name
        for i in a.consts:
            np.testing.assert_array_equal(a.consts[i], b.consts[i], err_msg=a.name)
        assert signature(a, graph.input_specs(a)) == signature(b, again.input_specs(b)), a.name
    assert list(again.inputs) == list(graph.inputs) and list(again.outputs) == list(graph.outputs)


# -- a tuned round trip -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def db_path(tmp_path_factory):
    return tmp_path_factory.mktemp("profiles") / "p.sqlite"


def tuned_session(name, db, resolution=64, pins=None):
    s = Session.from_onnx(zoo_model(name, resolution), num_threads=2, db=db)
    s.profile(repeats=2)
    if pins:
        for layer, d in pins.items():
            s.pin(layer, d)
    s.retune()
    return s


@pytest.fixture(scope="module")
def tiny_file(db_path, tmp_path_factory):
    """A tuned, exported 'tiny' with filters (res.conv1 alone in NHWC, so the plan has adapts)
    and one pin: (session, path)."""
    s = Session.from_onnx(zoo_model("tiny", 32), num_threads=2, db=db_path)
    s.profile(repeats=2)
    s.pin("branch.b", "cpu:float32:nchw/im2col")
    s.tune(filters=["cpu:float32:nchw/*", "cpu:float32:nhwc/im2col@res.conv1"])
    assert s.plan.choice["res.conv1"] == "cpu:float32:nhwc/im2col"
    assert s.plan.choice["branch.b"] == "cpu:float32:nchw/im2col"
    assert s.plan.adapts
    path = tmp_path_factory.mktemp("tuned") / "tiny.tuned.onnx"
    assert s.export(path, measure_runs=3) == path
    return s, path


@pytest.mark.parametrize("name", ["tiny", "mobilenet_v3_large"])
def test_export_load_round_trip(db_path, tmp_path, name):
    s = tuned_session(name, db_path)
    path = tmp_path / f"{name}.tuned.onnx"
    s.export(path, measure_runs=3)
    assert s.measured is not None and len(s.measured.samples) == 3
    loaded = workbench.load(path)
    assert isinstance(loaded, Session)
    assert loaded.plan.choice == s.plan.choice
    assert sorted(loaded.plan.adapts) == sorted(s.plan.adapts)
    assert loaded.num_threads == s.num_threads == 2 and loaded.io_format == s.io_format
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert loaded.predicted_s == float(meta["workbench.predicted_ms"]) / 1e3
    assert loaded.predicted_s == pytest.approx(s.predicted_s, rel=1e-5)
    assert float(meta["workbench.measured_ms"]) == pytest.approx(s.measured.median * 1e3, rel=1e-5)
    assert_same_layers(s.graph, loaded.graph)
    # the same routines on the same threads: the very same numbers (the thread governor may
    # have moved a run to one thread fewer while the tests' other worker held a core)
    s.compile().governor = loaded.compile().governor = None
    feeds = workbench.random_inputs(s.graph, seed=7)
    ours, again = s.run(feeds), loaded.run(feeds)
    assert set(ours) == set(again)
    for k in ours:
        np.testing.assert_array_equal(again[k], ours[k])
    # and ONNX Runtime runs the file with the original model's outputs
    assert_close(run_onnxruntime(path, feeds), run_onnxruntime(zoo_model(name), feeds))
    assert_close(ours, run_onnxruntime(zoo_model(name), feeds))


def test_pins_filters_and_adapts_survive_the_round_trip(tiny_file, db_path, tmp_path):
    s, path = tiny_file
    loaded = workbench.Session.load(path, db=db_path)
    assert loaded.pins == s.pins == {"branch.b": "cpu:float32:nchw/im2col"}
    assert loaded.filters == s.filters and len(s.filters) == 2
    assert loaded.plan.choice == s.plan.choice
    assert sorted(loaded.plan.adapts) == sorted(s.plan.adapts)
    assert len(loaded.compile().adapts) == len(s.plan.adapts)
    # exporting the loaded session writes the same annotations again
    again = loaded.export(tmp_path / "again.onnx", measure_runs=0)

    def annotations(p):
        m = onnx.load(str(p))
        return {n.name: {q.key: q.value for q in n.metadata_props if q.key in ("workbench.routine", "workbench.adapts",
                                                                             "workbench.pinned")}
                for n in m.graph.node}
    assert annotations(again) == annotations(path)
    # A loaded session retunes against the database (nothing measured again) to the same plan.
    loaded.profile(repeats=2)
    assert loaded.profiled.measured == 0
    assert loaded.retune().choice == s.plan.choice
    assert loaded.predicted_s == pytest.approx(s.predicted_s, rel=1e-12)


def test_file_annotations(tiny_file):
    s, path = tiny_file
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["workbench.format"] == tuned.FORMAT and tuned.is_tuned(model)
    assert meta["workbench.fingerprint"] == fingerprint(2)
    assert meta["workbench.num_threads"] == "2" and meta["workbench.io_format"] == "nchw"
    assert float(meta["workbench.predicted_ms"]) == pytest.approx(s.predicted_s * 1e3, rel=1e-5)
    assert float(meta["workbench.measured_ms"]) > 0
    nodes = {n.name: {p.key: p.value for p in n.metadata_props} for n in model.graph.node}
    costs, _ = s.costs()
    for layer in s.graph:
        props = nodes[layer.name]
        chosen = s.plan.choice[layer.name]
        assert props["workbench.routine"] == chosen, layer.name
        assert float(props["workbench.cost_ms"]) == pytest.approx(costs[layer.name][chosen] * 1e3, abs=1e-6)
        assert props["workbench.pinned"] == ("1" if layer.name in s.pins else "0")
        assert set(json.loads(props["workbench.candidates"])) == set(costs[layer.name])
    # every node the fusion added back (residual Add, activation) says which layer it belongs to
    extra = [n for n in model.graph.node if n.name not in {l.name for l in s.graph}]
    assert extra and all(nodes[n.name].get("workbench.part_of") in {l.name for l in s.graph} for n in extra)
    # the adapts recorded on the nodes are the plan's
    recorded = sorted(tuple(a) for p in nodes.values() for a in json.loads(p.get("workbench.adapts", "[]")))
    assert recorded == sorted((t, str(a), str(b)) for t, a, b in s.plan.adapts)


def _edit(path, out, model_meta=None, node=None, node_meta=None, drop=None, model_drop=None):
    """Copy the tuned file at ``path`` to ``out`` with metadata edited (or one entry dropped)."""
    model = onnx.load(str(path))
    if model_drop:
        keep = [p for p in model.metadata_props if p.key != model_drop]
        del model.metadata_props[:]
        model.metadata_props.extend(keep)
    for k, v in (model_meta or {}).items():
        for p in model.metadata_props:
            if p.key == k:
                p.value = v
    for n in model.graph.node:
        if n.name == node:
            for k, v in (node_meta or {}).items():
                for p in n.metadata_props:
                    if p.key == k:
                        p.value = v
            if drop:
                keep = [p for p in n.metadata_props if p.key != drop]
                del n.metadata_props[:]
                n.metadata_props.extend(keep)
    onnx.save_model(model, str(out))
    return out


def test_fingerprint_mismatch_warns_and_still_runs(tiny_file, tmp_path):
    s, path = tiny_file
    other = _edit(path, tmp_path / "other.onnx", model_meta={"workbench.fingerprint": "0123456789abcdef"})
    with pytest.warns(tuned.FingerprintWarning, match="another machine.*retune"):
        loaded = workbench.load(other)
    feeds = workbench.random_inputs(s.graph)
    out = loaded.run(feeds)
    np.testing.assert_array_equal(out["logits"], s.run(feeds)["logits"])
    # so does loading it for another thread count
    with pytest.warns(tuned.FingerprintWarning, match="threads"):
        assert workbench.Session.load(path, num_threads=1).num_threads == 1
    # the same file on this machine loads silently
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        workbench.load(path)


def test_corrupt_files_are_clear_errors(tiny_file, tmp_path):
    s, path = tiny_file
    data = path.read_bytes()
    half = tmp_path / "half.onnx"
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=r"half\.onnx.*truncated"):
        workbench.load(half)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(ModelFileError, match=r"garbage\.onnx"):
        workbench.load(garbage)
    with pytest.raises(ModelFileError, match=r"garbage\.onnx"):
        workbench.Session.load(garbage)

    cases = {
        "unknown routine": (dict(node="res.conv2", node_meta={"workbench.routine": "cpu:float32:nchw/nosuchalgo"}),
                            r"res\.conv2.*workbench\.routine.*nosuchalgo"),
        "does not apply": (dict(node="branch.a", node_meta={"workbench.routine": "cpu:float32:nchw/winograd4"}),
                           r"branch\.a.*winograd4 does not apply"),
        "conv routine on a pool": (dict(node="stem.maxpool",
                                        node_meta={"workbench.routine": "cpu:float32:nchw/im2col"}),
                                   r"stem\.maxpool.*workbench\.routine"),
        "annotation removed": (dict(node="head.conv", drop="workbench.routine"),
                               r"head\.conv.*no workbench\.routine annotation"),
        "threads": (dict(model_meta={"workbench.num_threads": "two"}), r"workbench\.num_threads.*malformed.*'two'"),
        "zero threads": (dict(model_meta={"workbench.num_threads": "0"}), r"workbench\.num_threads must be >= 1"),
        "no fingerprint": (dict(model_drop="workbench.fingerprint"), r"'workbench\.fingerprint' is missing"),
        "io format": (dict(model_meta={"workbench.io_format": "nwhc"}), r"workbench\.io_format must be.*'nwhc'"),
        "predicted": (dict(model_meta={"workbench.predicted_ms": "fast"}), r"workbench\.predicted_ms.*malformed"),
        "pins": (dict(model_meta={"workbench.pins": "{not json"}), r"workbench\.pins.*malformed"),
        "adapts": (dict(node="fc", node_meta={"workbench.adapts": "[[oops"}), r"fc.*workbench\.adapts.*malformed"),
    }
    for label, (edit, pattern) in cases.items():
        bad = _edit(path, tmp_path / f"{label.replace(' ', '_')}.onnx", **edit)
        with pytest.raises(tuned.TunedModelError, match=pattern):
            workbench.load(bad)
        with pytest.raises(workbench.WorkbenchError, match=rf"{label.replace(' ', '_')}\.onnx"):
            workbench.load(bad)
    # an untuned model is not a tuned model
    plain = tmp_path / "plain.onnx"
    onnx.save_model(zoo_model("tiny", 32), str(plain))
    with pytest.raises(tuned.TunedModelError, match=r"plain\.onnx.*not a tuned model"):
        workbench.Session.load(plain)
    assert isinstance(workbench.load(plain), workbench.Graph)
    assert issubclass(tuned.TunedModelError, workbench.WorkbenchError)


def test_export_before_tune_writes_nothing(tmp_path, db_path):
    s = Session.from_onnx(zoo_model("tiny", 32), num_threads=2, db=db_path)
    with pytest.raises(workbench.session.NotTunedError):
        s.export(tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


# -- the fused graph written back as ONNX ---------------------------------------------------------

@pytest.mark.parametrize("name", zoo.NAMES)
def test_export_graph_of_every_zoo_model_runs_in_onnxruntime(name):
    model = zoo_model(name)
    graph = workbench.load(model)
    exported = onnx_export.export_graph(graph)
    onnx.checker.check_model(exported)
    assert exported.ir_version >= onnx_export.MIN_IR_VERSION
    feeds = workbench.random_inputs(graph, seed=1)
    assert_close(run_onnxruntime(exported, feeds), run_onnxruntime(model, feeds))
    again = workbench.load(exported)
    assert_same_layers(graph, again)
    assert len(exported.graph.node) < len(model.graph.node)   # BatchNorms stay folded


def _conv(name, x, y, cin, cout, rng, k=3, pad=1):
    w = rng.standard_normal((cout, cin, k, k)).astype(np.float32) * 0.3
    b = rng.standard_normal(cout).astype(np.float32) * 0.1
    node = helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [y], name=name, kernel_shape=[k, k],
                            pads=[pad] * 4)
    return node, [(f"{name}.w", w), (f"{name}.b", b)]


def _activation_model(act, opset, rng):
    """input -> Conv -> <act> -> output, with ``act`` spelled as at ``opset``."""
    conv, inits = _conv("conv", "input", "c", 3, 8, rng)
    nodes = [conv]
    if act == "Relu6":
        if opset >= 11:
            inits += [("lo", np.float32(0)), ("hi", np.float32(6))]
            nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["output"], name="relu6"))
        else:
            nodes.append(helper.make_node("Clip", ["c"], ["output"], name="relu6", min=0.0, max=6.0))
    elif act == "ClipMaxOnly":
        inits += [("hi", np.float32(0.5))]
        nodes.append(helper.make_node("Clip", ["c", "", "hi"], ["output"], name="clip"))
    elif act == "HardSwish":
        if opset >= 14:
            nodes.append(helper.make_node("HardSwish", ["c"], ["output"], name="hswish"))
        else:
            nodes += [helper.make_node("HardSigmoid", ["c"], ["g"], name="hsig", alpha=1 / 6, beta=0.5),
                      helper.make_node("Mul", ["c", "g"], ["output"], name="hswish")]
    elif act == "PRelu":
        inits += [("slope", rng.uniform(0.05, 0.3, (8, 1, 1)).astype(np.float32))]
        nodes.append(helper.make_node("PRelu", ["c", "slope"], ["output"], name="prelu"))
    elif act == "LeakyRelu":
        nodes.append(helper.make_node("LeakyRelu", ["c"], ["output"], name="leaky", alpha=0.13))
    else:
        nodes.append(helper.make_node(act, ["c"], ["output"], name=act.lower()))
    return make_model(nodes, [("input", [1, 3, 10, 10])], [("output", [1, 8, 10, 10])], inits, opset=opset)


def _standalone_hardswish_model(opset, rng):
    """input -> HardSwish with no producer to fuse into: a HardSwish layer of its own."""
    if opset >= 14:
        nodes = [helper.make_node("HardSwish", ["input"], ["output"], name="hswish")]
    else:
        nodes = [helper.make_node("HardSigmoid", ["input"], ["g"], name="hswish", alpha=1 / 6, beta=0.5),
                 helper.make_node("Mul", ["g", "input"], ["output"], name="mul")]
    return make_model(nodes, [("input", [1, 4, 5, 5])], [("output", [1, 4, 5, 5])], opset=opset)


def _batchnorm_params(prefix, c, rng):
    return [(f"{prefix}.scale", rng.uniform(0.5, 1.5, c).astype(np.float32)),
            (f"{prefix}.bias", rng.standard_normal(c).astype(np.float32)),
            (f"{prefix}.mean", rng.standard_normal(c).astype(np.float32) * 0.2),
            (f"{prefix}.var", rng.uniform(0.5, 2.0, c).astype(np.float32))]


def _bn(prefix, x, y, c, rng, eps=1e-3):
    inits = _batchnorm_params(prefix, c, rng)
    return helper.make_node("BatchNormalization", [x] + [n for n, _ in inits], [y], name=prefix, epsilon=eps), inits


def _standalone_bn_model(opset, rng):
    """input -> BatchNormalization (no producer to fold into: a ChannelAffine) -> Relu."""
    bn, inits = _bn("bn", "input", "b", 4, rng)
    nodes = [bn, helper.make_node("Relu", ["b"], ["output"], name="relu")]
    return make_model(nodes, [("input", [1, 4, 6, 6])], [("output", [1, 4, 6, 6])], inits, opset=opset)


def _gemm_bn_model(opset, rng):
    """input -> Flatten -> Gemm(alpha, beta, transB) -> BatchNormalization (folded) -> output."""
    w = rng.standard_normal((5, 12)).astype(np.float32)
    c = rng.standard_normal(5).astype(np.float32)
    bn, inits = _bn("bn", "g", "output", 5, rng)
    nodes = [helper.make_node("Flatten", ["input"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "gemm.w", "gemm.c"], ["g"], name="gemm", alpha=0.7, beta=1.3, transB=1),
             bn]
    return make_model(nodes, [("input", [2, 3, 2, 2])], [("output", [2, 5])],
                      [("gemm.w", w), ("gemm.c", c)] + inits, opset=opset)


def _gemm_nobias_bn_model(opset, rng):
    """input -> Flatten -> Gemm(no C, transB=0) -> BatchNormalization (folded into a new bias)."""
    w = rng.standard_normal((12, 5)).astype(np.float32)
    bn, inits = _bn("bn", "g", "output", 5, rng)
    nodes = [helper.make_node("Flatten", ["input"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "gemm.w"], ["g"], name="gemm", alpha=1.5), bn]
    return make_model(nodes, [("input", [2, 3, 2, 2])], [("output", [2, 5])], [("gemm.w", w)] + inits, opset=opset)


def _residual_model(opset, rng):
    """input -> Conv(relu) -> Conv -> Add(skip = first conv's output) -> Relu, plus a BN folded
    into the second conv."""
    c1, i1 = _conv("conv1", "input", "a", 3, 6, rng)
    c2, i2 = _conv("conv2", "r", "b", 6, 6, rng)
    bn, i3 = _bn("bn2", "b", "bb", 6, rng)
    nodes = [c1, helper.make_node("Relu", ["a"], ["r"], name="relu1"), c2, bn,
             helper.make_node("Add", ["bb", "r"], ["s"], name="add"),
             helper.make_node("Relu", ["s"], ["output"], name="relu2")]
    return make_model(nodes, [("input", [1, 3, 8, 8])], [("output", [1, 6, 8, 8])], i1 + i2 + i3, opset=opset)


CASES = {
    "relu6": lambda opset, rng: _activation_model("Relu6", opset, rng),
    "clip_max_only": lambda opset, rng: _activation_model("ClipMaxOnly", opset, rng),
    "hardswish": lambda opset, rng: _activation_model("HardSwish", opset, rng),
    "prelu": lambda opset, rng: _activation_model("PRelu", opset, rng),
    "leakyrelu": lambda opset, rng: _activation_model("LeakyRelu", opset, rng),
    "sigmoid": lambda opset, rng: _activation_model("Sigmoid", opset, rng),
    "standalone_batchnorm": _standalone_bn_model,
    "standalone_hardswish": _standalone_hardswish_model,
    "gemm_batchnorm": _gemm_bn_model,
    "gemm_nobias_batchnorm": _gemm_nobias_bn_model,
    "conv_residual_relu": _residual_model,
}

EXPECTED_LAYERS = {   # what the fusion leaves: (op, activation, residual) per layer
    "relu6": [("Conv", "Clip", None)], "clip_max_only": [("Conv", "Clip", None)],
    "hardswish": [("Conv", "HardSwish", None)], "prelu": [("Conv", "PRelu", None)],
    "leakyrelu": [("Conv", "LeakyRelu", None)], "sigmoid": [("Conv", "Sigmoid", None)],
    "standalone_batchnorm": [("ChannelAffine", "Relu", None)],
    "standalone_hardswish": [("HardSwish", None, None)],
    "gemm_batchnorm": [("Flatten", None, None), ("Gemm", None, None)],
    "gemm_nobias_batchnorm": [("Flatten", None, None), ("Gemm", None, None)],
    "conv_residual_relu": [("Conv", "Relu", None), ("Conv", "Relu", True)],
}


@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("case", list(CASES))
def test_export_graph_of_fused_layers(case, opset, rng, tmp_path):
    model = CASES[case](opset, rng)
    onnx.checker.check_model(model)
    graph = workbench.load(model)
    assert [(l.op, l.attrs.get("activation"), l.attrs.get("residual") or None) for l in graph] == EXPECTED_LAYERS[case]
    exported = onnx_export.export_graph(graph)
    onnx.checker.check_model(exported)
    assert exported.opset_import[0].version == opset
    if case in ("hardswish", "standalone_hardswish"):
        ops = [n.op_type for n in exported.graph.node]
        assert ("HardSwish" in ops) == (opset >= 14) and ("HardSigmoid" in ops) == (opset < 14)
    feeds = workbench.random_inputs(graph, seed=2)
    feeds = {k: v * 3 for k, v in feeds.items()}   # reach the clip bounds and negative slopes
    reference = run_onnxruntime(model, feeds)
    assert_close(run_onnxruntime(exported, feeds), reference)
    again = workbench.load(exported)
    assert_same_layers(graph, again)
    assert_close(workbench.ReferenceExecutor(again).run(feeds), reference)
    # A tuned session of the model round-trips too (costs of one quick profile).
    s = Session(graph, num_threads=2, db=tmp_path / "p.sqlite")
    s.profile(repeats=1)
    s.retune()
    path = s.export(tmp_path / "m.onnx", measure_runs=0)
    loaded = workbench.load(path)
    assert loaded.plan.choice == s.plan.choice
    assert_close(loaded.run(feeds), reference)
    assert_close(run_onnxruntime(path, feeds), reference)


def test_loaded_session_explains_its_plan_from_the_file(tiny_file):
    s, path = tiny_file
    loaded = workbench.load(path)
    assert loaded.profiled is None   # nothing measured on load
    rows, original = loaded.layer_rows(), s.layer_rows()
    assert [r["routine"] for r in rows] == [r["routine"] for r in original]
    for r, o in zip(rows, original):
        assert r["cost_ms"] == pytest.approx(o["cost_ms"], abs=1e-5)   # the file keeps ms to 6 decimals
        assert r["pinned"] == o["pinned"] and r["adapts"] == o["adapts"]
