"""Routine filters: syntax, selections, fallbacks and their errors."""
import numpy as np
import pytest
from onnx import helper

import workbench
from workbench import routines
from workbench.tuning.filters import FilterError, assign, parse_filter
from workbench.ir.graph import NHWC
from onnx_helpers import make_model

REFERENCE = "cpu:float32:nchw/reference"


@pytest.fixture
def graph(rng):
    nodes = [helper.make_node("Relu", ["x"], ["r0"], name="relu0"),
             helper.make_node("Sigmoid", ["r0"], ["s0"], name="sig0"),
             helper.make_node("Relu", ["s0"], ["r1"], name="relu1"),
             helper.make_node("Tanh", ["r1"], ["y"], name="tanh")]
    return workbench.load(make_model(nodes, [("x", [1, 2, 3, 4])], [("y", None)]).SerializeToString())


@pytest.fixture
def fake_nhwc():
    """Relu/Sigmoid/Tanh with only the reference routine, plus a fake NHWC Relu routine."""
    routines.load_all()
    saved = {op: routines._REGISTRY[op] for op in ("Relu", "Sigmoid", "Tanh")}
    for op, table in saved.items():
        routines._REGISTRY[op] = {REFERENCE: table[REFERENCE]}

    class FakeRelu(routines.Routine):
        op, layout, algo, priority = "Relu", NHWC, "fake", 5

        @classmethod
        def applies(cls, layer, specs):
            return True

    yield FakeRelu.descriptor
    routines._REGISTRY.update(saved)


def test_default_is_best_priority(graph, fake_nhwc):
    a, fallbacks = assign(graph)
    assert a == {"relu0": fake_nhwc, "sig0": REFERENCE, "relu1": fake_nhwc, "tanh": REFERENCE} and not fallbacks


def test_family_filter_falls_back_and_reports(graph, fake_nhwc):
    a, fallbacks = assign(graph, ["cpu:float32:nhwc/*"])
    assert a["relu0"] == a["relu1"] == fake_nhwc
    assert {f.layer for f in fallbacks} == {"sig0", "tanh"} and all(f.chosen == REFERENCE for f in fallbacks)


def test_selection_by_index_range_and_name_last_filter_wins(graph, fake_nhwc):
    a, _ = assign(graph, [f"{REFERENCE}@0..3", "cpu:float32:nhwc/fake@relu1"])
    assert a == {"relu0": REFERENCE, "sig0": REFERENCE, "relu1": fake_nhwc, "tanh": REFERENCE}
    a, _ = assign(graph, ["cpu:float32:nhwc/fake@relu1", f"{REFERENCE}@2"])
    assert a["relu1"] == REFERENCE and a["relu0"] == fake_nhwc


@pytest.mark.parametrize("text, message", [
    ("im2col", "expected DEVICE:DTYPE:LAYOUT/ALGO"),
    ("cpu:float32:nchw/nosuchalgo", "matches no routine"),
    (f"{REFERENCE}@7", "no layer 7"),
    (f"{REFERENCE}@2..9", "outside layers 0..3"),
    (f"{REFERENCE}@3..x", "bad range"),
    (f"{REFERENCE}@conv9", "no layer named 'conv9'"),
    (f"{REFERENCE}@1,,2", "empty layer selection"),
])
def test_malformed_filters(graph, fake_nhwc, text, message):
    with pytest.raises(FilterError, match=message):
        parse_filter(text, graph)


def test_explicit_layer_without_matching_routine_is_an_error(graph, fake_nhwc):
    with pytest.raises(FilterError, match=r"selects layer 1 node 'sig0' \(Sigmoid\).*applicable: cpu:float32:nchw/reference"):
        assign(graph, ["cpu:float32:nhwc/fake@1"])


def test_cli_routine_filter_errors(tmp_path, capsys, graph):
    from workbench.cli.main import main
    from workbench import zoo
    path = tmp_path / "tiny.onnx"
    zoo.save("tiny", path)
    assert main(["run", str(path), "--routine", "cpu:float32:nchw/nosuch"]) == 2
    assert "matches no routine" in capsys.readouterr().err
    assert main(["run", str(path), "--routine", f"{REFERENCE}@0..2", "--check"]) == 0
