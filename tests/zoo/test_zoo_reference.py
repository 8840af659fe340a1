"""Every zoo model imports, fuses, and its fused reference output matches ONNX Runtime (1e-4 rel)."""
import pytest

import workbench
from workbench import zoo
from onnx_helpers import assert_matches_onnxruntime


@pytest.mark.parametrize("name", zoo.NAMES)
def test_fused_reference_matches_onnxruntime(name):
    model = zoo.build(name, batch=1)
    graph, outputs = assert_matches_onnxruntime(model, rtol=1e-4)
    counts = graph.op_counts()
    # BatchNormalization always folds; no activation layer survives next to a Conv.
    assert "BatchNormalization" not in counts and "ChannelAffine" not in counts
    for act in ("Relu", "Clip", "HardSwish", "HardSigmoid"):
        assert act not in counts, (name, counts)
    assert graph.outputs == ["logits"] and outputs["logits"].shape == (1, 1000)


def test_resnet50_fusion_facts():
    source = zoo.build("resnet50")
    graph = workbench.load(source)
    src_counts = graph.meta["source_op_counts"]
    assert src_counts["BatchNormalization"] == 53 and src_counts["Relu"] == 49 and src_counts["Add"] == 16
    convs = [l for l in graph if l.op == "Conv"]
    assert len(convs) == 53
    residual = [c for c in convs if c.attrs.get("residual")]
    assert len(residual) == 16 and all(c.attrs["activation"] == "Relu" for c in residual)
    # Each conv absorbed its BatchNormalization; the residual ones also the Add and the Relu.
    assert sum(len(c.fused) for c in convs) == 53 + 53 + 49 + 16
    assert graph.op_counts() == {"Conv": 53, "Flatten": 1, "Gemm": 1, "GlobalAveragePool": 1, "MaxPool": 1}


def test_batch_and_resolution_are_parameters():
    graph, outputs = assert_matches_onnxruntime(zoo.build("mobilenet_v3_large", batch=2, resolution=96))
    assert graph.inputs["input"].shape == (2, 3, 96, 96) and outputs["logits"].shape == (2, 1000)
