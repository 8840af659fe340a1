"""Tests for the model zoo: validity, determinism, architecture facts and sane
activations under ONNX Runtime.

Models are cached per process; VGG-16 (138M parameters) is built three times:
the default model, a second copy for the determinism check, and the
batch-2 / resolution-160 / seed-1 variant.
"""

from __future__ import annotations

import functools
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from workbench import zoo

BIG = ("resnet50", "mobilenet_v2", "mobilenet_v3_large", "vgg16")
SLOW = {"resnet50", "vgg16"}

# torchvision's parameter counts (learnable parameters, without BN running stats).
CANONICAL_PARAMS = {
    "resnet50": 25_557_032,
    "mobilenet_v2": 3_504_872,
    "mobilenet_v3_large": 5_483_032,
    "vgg16": 138_357_544,
}

# Full op histogram of each model: pins down the architecture.
EXPECTED_OPS = {
    "tiny": {"Conv": 6, "BatchNormalization": 5, "Relu": 6, "MaxPool": 1, "AveragePool": 1,
             "Add": 1, "Concat": 1, "GlobalAveragePool": 1, "Flatten": 1, "Gemm": 1},
    "resnet50": {"Conv": 53, "BatchNormalization": 53, "Relu": 49, "Add": 16, "MaxPool": 1,
                 "GlobalAveragePool": 1, "Flatten": 1, "Gemm": 1},
    "mobilenet_v2": {"Conv": 52, "BatchNormalization": 52, "Clip": 35, "Add": 10,
                     "GlobalAveragePool": 1, "Reshape": 1, "Gemm": 1},
    "mobilenet_v3_large": {"Conv": 62, "BatchNormalization": 46, "HardSwish": 21, "Relu": 19,
                           "Add": 10, "GlobalAveragePool": 9, "HardSigmoid": 8, "Mul": 8,
                           "Flatten": 1, "Gemm": 2},
    "vgg16": {"Conv": 13, "Relu": 15, "MaxPool": 5, "Flatten": 1, "Gemm": 3, "Dropout": 2},
}
DEPTHWISE_CONVS = {"tiny": 0, "resnet50": 0, "mobilenet_v2": 17, "mobilenet_v3_large": 15,
                   "vgg16": 0}

# (batch, resolution) variants, built with seed=1.
VARIANTS = {
    "tiny": ((2, 48),),
    "resnet50": ((2, 160),),
    "mobilenet_v2": ((2, 160), (2, 96)),
    "mobilenet_v3_large": ((2, 160), (2, 96)),
    "vgg16": ((2, 160),),
}


def _param(name: str):
    return pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name


ALL = [_param(n) for n in zoo.NAMES]
BIG_PARAMS = [_param(n) for n in BIG]


@pytest.fixture(scope="module", autouse=True)
def _free_cached_models():
    """Drop the cached models (about 2 GB with VGG-16) once this module is done."""
    yield
    for cached in (_model, _serialized, _logits):
        cached.cache_clear()


@functools.lru_cache(maxsize=None)
def _model(name: str, batch: int = 1, resolution: int | None = None,
           seed: int = 0) -> onnx.ModelProto:
    return zoo.build(name, batch=batch, resolution=resolution, seed=seed)


@functools.lru_cache(maxsize=None)
def _serialized(name: str, batch: int = 1, resolution: int | None = None,
                seed: int = 0) -> bytes:
    return _model(name, batch, resolution, seed).SerializeToString()


def _session(model: onnx.ModelProto | bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _input_shape(model: onnx.ModelProto) -> tuple[int, ...]:
    return tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim)


def _random_input(model: onnx.ModelProto, seed: int = 1234) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(_input_shape(model), dtype=np.float32)


@functools.lru_cache(maxsize=None)
def _logits(name: str, batch: int = 1, resolution: int | None = None,
            seed: int = 0) -> np.ndarray:
    model = _model(name, batch, resolution, seed)
    session = _session(_serialized(name, batch, resolution, seed))
    (logits,) = session.run(["logits"], {"input": _random_input(model)})
    return logits


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _is_learnable(t: onnx.TensorProto) -> bool:
    return (t.data_type == onnx.TensorProto.FLOAT and len(t.dims) > 0
            and not t.name.endswith(("running_mean", "running_var")))


# ---------------------------------------------------------------------------- API
def test_names_and_unknown_name():
    assert zoo.NAMES == ("tiny", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "vgg16")
    with pytest.raises(ValueError) as excinfo:
        zoo.build("alexnet")
    for name in zoo.NAMES:
        assert name in str(excinfo.value)


def test_tiny_defaults_and_num_classes():
    model = zoo.build("tiny", num_classes=10)
    assert _input_shape(model) == (1, 3, 32, 32)
    assert _session(model).run(None, {"input": _random_input(model)})[0].shape == (1, 10)
    params = sum(int(np.prod(t.dims)) for t in _model("tiny").graph.initializer)
    assert params < 50_000


def test_save_round_trip(tmp_path):
    path = tmp_path / "tiny.onnx"
    assert zoo.save("tiny", path, seed=3) == path
    assert onnx.load(str(path)).SerializeToString() == zoo.build("tiny", seed=3).SerializeToString()


# ------------------------------------------------------------------- validity
@pytest.mark.parametrize("name", ALL)
def test_checker_and_signature(name):
    model = _model(name)
    onnx.checker.check_model(_serialized(name), full_check=True)
    assert model.ir_version == 8
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == ("input", "logits")
    for value in (inp, out):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    res = zoo.default_resolution(name)
    assert res == (32 if name == "tiny" else 224)
    assert _input_shape(model) == (1, 3, res, res)
    assert [d.dim_value for d in out.type.tensor_type.shape.dim] == [1, 1000]
    names = [n.name for n in model.graph.node]
    assert all(names) and len(set(names)) == len(names)


@pytest.mark.parametrize("name", ALL)
def test_ort_logits_sane(name):
    logits = _logits(name)
    assert logits.shape == (1, 1000) and logits.dtype == np.float32
    assert np.isfinite(logits).all()
    assert 0.05 < float(logits.std()) < 50


@pytest.mark.parametrize("name", [_param(n) for n in zoo.NAMES if n != "vgg16"])
def test_intermediate_activations_bounded(name):
    model = onnx.ModelProto()
    model.CopyFrom(_model(name))
    outputs = [node.output[0] for node in model.graph.node]
    model.graph.output.extend(onnx.helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None)
                              for o in outputs[:-1])
    values = _session(model).run(outputs, {"input": _random_input(model)})
    for node, value in zip(model.graph.node, values):
        rms = float(np.sqrt(np.mean(np.square(value, dtype=np.float64))))
        assert np.isfinite(value).all(), node.name
        assert 0.01 < rms < 20, (node.name, rms)
        assert np.abs(value).max() < 200, node.name


# ---------------------------------------------------------------- determinism
@pytest.mark.parametrize("name", ALL)
def test_same_seed_is_byte_identical(name):
    assert zoo.build(name).SerializeToString() == _serialized(name)


@pytest.mark.parametrize("name", ALL)
def test_other_seed_changes_every_weight(name):
    # The variant also changes batch and resolution, but conv weights do not
    # depend on those (see test_weights_independent_of_shape).
    batch, res = VARIANTS[name][0]
    a = {t.name: t for t in _model(name).graph.initializer}
    b = {t.name: t for t in _model(name, batch, res, seed=1).graph.initializer}
    assert a.keys() == b.keys()
    compared = 0
    for key, ta in a.items():
        # Skip the 4096-wide VGG Gemms: reading raw_data copies 400 MB.
        if ta.data_type == onnx.TensorProto.FLOAT and ta.dims == b[key].dims \
                and len(ta.dims) > 0 and np.prod(ta.dims) < 2**24:
            assert ta.raw_data != b[key].raw_data, key
            compared += 1
    assert compared >= len(a) - 3


@pytest.mark.parametrize("name", ["tiny", "mobilenet_v2"])
def test_weights_independent_of_shape(name):
    # Only BN running stats and the last Gemm's scale are calibrated per resolution.
    model = _model(name)
    a, b = _weights(model), _weights(zoo.build(name, batch=2, resolution=64))
    assert a.keys() == b.keys()
    calibrated = set(model.graph.node[-1].input)
    for key in a:
        if key.endswith(("running_mean", "running_var", ".shape")) or key in calibrated:
            continue
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("name", ["tiny", "mobilenet_v2"])
def test_batch_rows_are_independent(name):
    single, double = _model(name), zoo.build(name, batch=2)
    x = _random_input(double)
    (y2,) = _session(double).run(None, {"input": x})
    (y0,) = _session(single).run(None, {"input": x[:1]})
    (y1,) = _session(single).run(None, {"input": x[1:]})
    np.testing.assert_allclose(y2, np.concatenate([y0, y1]), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------- variants
@pytest.mark.parametrize("name,batch,res", [
    pytest.param(n, b, r, marks=pytest.mark.slow) if n in SLOW else (n, b, r)
    for n in zoo.NAMES for b, r in VARIANTS[n]
])
def test_variant_shapes(name, batch, res):
    model = _model(name, batch, res, seed=1)
    assert _input_shape(model) == (batch, 3, res, res)
    logits = _logits(name, batch, res, seed=1)
    assert logits.shape == (batch, 1000)
    assert np.isfinite(logits).all() and 0.05 < float(logits.std()) < 50


# --------------------------------------------------------------- architecture
@pytest.mark.parametrize("name", BIG_PARAMS)
def test_parameter_count(name):
    inits = _model(name).graph.initializer
    total = sum(int(np.prod(t.dims)) for t in inits)
    learnable = sum(int(np.prod(t.dims)) for t in inits if _is_learnable(t))
    assert abs(total / CANONICAL_PARAMS[name] - 1) < 0.02
    assert learnable == CANONICAL_PARAMS[name]


@pytest.mark.parametrize("name", ALL)
def test_op_histogram(name):
    model = _model(name)
    assert Counter(n.op_type for n in model.graph.node) == EXPECTED_OPS[name]
    depthwise = [n for n in model.graph.node if n.op_type == "Conv"
                 and onnx.helper.get_node_attr_value(n, "group") > 1]
    assert len(depthwise) == DEPTHWISE_CONVS[name]


@pytest.mark.parametrize("name", [_param(n) for n in zoo.NAMES if n != "tiny"])
def test_pytorch_export_style(name):
    model = _model(name)
    producers = {n.output[0]: n for n in model.graph.node}
    for node in model.graph.node:
        if node.op_type == "BatchNormalization":
            conv = producers[node.input[0]]
            assert conv.op_type == "Conv" and len(conv.input) == 2  # bias-free conv
            assert onnx.helper.get_node_attr_value(node, "epsilon") == pytest.approx(1e-5)
        if node.op_type == "Clip":
            assert len(node.input) == 3 and not node.attribute  # min/max as inputs
        if node.op_type == "Gemm":
            assert onnx.helper.get_node_attr_value(node, "transB") == 1
    last = model.graph.node[-1]
    assert last.op_type == "Gemm" and last.output[0] == "logits"


@pytest.mark.slow
def test_resnet50_is_v1_5():
    strided = [(n.name, onnx.helper.get_node_attr_value(n, "kernel_shape")[0])
               for n in _model("resnet50").graph.node
               if n.op_type == "Conv" and onnx.helper.get_node_attr_value(n, "strides")[0] == 2]
    assert strided == [("conv1", 7),
                       ("layer2.0.conv2", 3), ("layer2.0.downsample", 1),
                       ("layer3.0.conv2", 3), ("layer3.0.downsample", 1),
                       ("layer4.0.conv2", 3), ("layer4.0.downsample", 1)]


def test_mobilenet_v3_squeeze_excite_pattern():
    graph = _model("mobilenet_v3_large").graph
    producers = {n.output[0]: n for n in graph.node}

    def chain(name: str, ops: list[str]) -> str | None:
        """Follow first inputs back through ``ops``; return the chain's input."""
        for op in ops:
            node = producers.get(name)
            if node is None or node.op_type != op:
                return None
            name = node.input[0]
        return name

    found = 0
    for node in graph.node:
        if node.op_type == "Mul":
            x, gate = node.input
            source = chain(gate, ["HardSigmoid", "Conv", "Relu", "Conv", "GlobalAveragePool"])
            found += source == x
    assert found == 8


@pytest.mark.slow
def test_vgg16_classifier_at_other_resolution():
    graph = _model("vgg16", 2, 160, seed=1).graph
    fc1 = next(t for t in graph.initializer if t.name == "classifier.0.weight")
    assert list(fc1.dims) == [4096, 512 * 5 * 5]
