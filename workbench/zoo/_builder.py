"""Shared mechanics for the model zoo: a small ONNX graph builder.

`GraphBuilder` appends nodes and seeded random initializers to a graph and
writes them the way PyTorch's exporter does (bias-free Conv followed by
BatchNormalization, Clip with min/max inputs, ...).

To keep activations in a sane range through deep networks, the builder pushes
a calibration probe (a couple of standard-normal images, drawn from a child of
the seeded generator) through every layer it adds, with NumPy.  BatchNormalization
running statistics are drawn around the probe's per-channel statistics, the
way a trained network's statistics match the data flowing through it, so each
BatchNormalization re-normalises its channels; the classifier's last Gemm is
scaled so that the logits have a std near 1.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

OPSET = 17
IR_VERSION = 8
BN_EPSILON = 1e-5
# The calibration probe holds at least two 224x224 images' worth of pixels, so
# the deepest (7x7 at 224) feature maps still give ~100 samples per channel.
PROBE_PIXELS = 2 * 224 * 224
MAX_PROBE_BATCH = 64

# NumPy versions of the activations, applied to the calibration probe.
_ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0.0),
    "relu6": lambda x: np.clip(x, 0.0, 6.0),
    "hardswish": lambda x: x * np.clip(x / 6.0 + 0.5, 0.0, 1.0),
    "hardsigmoid": lambda x: np.clip(x / 6.0 + 0.5, 0.0, 1.0),
}


def _windows(x: np.ndarray, kernel: int, stride: int, pad: int, fill: float) -> np.ndarray:
    """Sliding windows of an NCHW array: [N, C, kernel*kernel, out, out]."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=fill)
    out = (x.shape[2] - kernel) // stride + 1
    span = stride * (out - 1) + 1
    return np.stack([x[:, :, i:i + span:stride, j:j + span:stride]
                     for i in range(kernel) for j in range(kernel)], axis=2)


def _conv(x: np.ndarray, w: np.ndarray, stride: int, pad: int, groups: int) -> np.ndarray:
    """Reference grouped 2-D convolution (NCHW, OIHW, square kernel)."""
    cols = _windows(x, w.shape[2], stride, pad, 0.0)
    n, c, taps, out, _ = cols.shape
    if groups == c == w.shape[0]:  # depthwise: avoid thousands of tiny BLAS calls
        return np.einsum("nctij,ct->ncij", cols, w.reshape(c, taps))
    cols = cols.reshape(n, groups, -1, out * out)  # [N, G, C/G * taps, P]
    y = w.reshape(groups, w.shape[0] // groups, -1) @ cols  # [N, G, O/G, P]
    return y.reshape(n, w.shape[0], out, out)


class GraphBuilder:
    """Accumulate nodes and seeded initializers for one model graph.

    Parameters
    ----------
    name : str
        Graph name.
    batch, resolution : int
        Shape of the single graph input ``"input"``: [batch, 3, res, res].
    seed : int
        Seed of the ``numpy.random.default_rng`` that draws every weight, in
        the order the layers are added (and, through a spawned child, the
        calibration probe).
    """

    def __init__(self, name: str, batch: int, resolution: int, seed: int):
        if batch < 1 or resolution < 1:
            raise ValueError(f"batch and resolution must be >= 1, got {batch}, {resolution}")
        self.name = name
        self.batch = batch
        self.resolution = resolution
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        # Initializers go straight into the result: VGG-16 holds 553 MB of them,
        # and every protobuf copy (extend, make_model) costs about a second.
        self._model = onnx.ModelProto()
        self._names: set[str] = {"input"}
        # Probe value of every tensor added so far.  The probe comes from a
        # child generator, so the weights drawn from self.rng do not depend on
        # the resolution (nor on the batch size).
        probe_batch = min(MAX_PROBE_BATCH, -(-PROBE_PIXELS // resolution**2))
        probe = self.rng.spawn(1)[0].standard_normal(
            (probe_batch, 3, resolution, resolution), dtype=np.float32)
        self._probe = {"input": probe}

    # ------------------------------------------------------------------ basics
    def channels(self, x: str) -> int:
        """Channel (or feature) count of tensor ``x``."""
        return self._probe[x].shape[1]

    def size(self, x: str) -> int:
        """Spatial size (height == width) of tensor ``x``; 1 once flattened."""
        shape = self._probe[x].shape
        return shape[2] if len(shape) == 4 else 1

    def _claim(self, name: str) -> str:
        if name in self._names:
            raise ValueError(f"duplicate name {name!r}")
        self._names.add(name)
        return name

    def initializer(self, name: str, array: np.ndarray) -> str:
        """Add ``array`` as an initializer called ``name``; return the name."""
        tensor = self._model.graph.initializer.add()
        tensor.name = self._claim(name)
        tensor.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
        tensor.dims.extend(array.shape)
        tensor.raw_data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        return name

    def constant(self, name: str, array: np.ndarray) -> str:
        """Like `initializer`, but reuse ``name`` if it already exists."""
        return name if name in self._names else self.initializer(name, array)

    def node(self, op_type: str, inputs: list[str], name: str, probe: np.ndarray,
             output: str | None = None, **attrs) -> str:
        """Append a node whose output (named ``output`` or ``name``) has ``probe``."""
        out = self._claim(output or name)
        if out != name:
            self._claim(name)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name, **attrs))
        self._probe[out] = probe.astype(np.float32, copy=False)
        return out

    def _normal(self, shape: tuple[int, ...], std: float = 1.0) -> np.ndarray:
        values = self.rng.standard_normal(shape, dtype=np.float32)
        values *= np.float32(std)
        return values

    def _uniform(self, n: int, low: float, high: float) -> np.ndarray:
        return self.rng.uniform(low, high, n).astype(np.float32)

    # ------------------------------------------------------------------ layers
    def conv(self, x: str, name: str, out_channels: int, kernel: int, stride: int = 1,
             groups: int = 1, bias: bool = False) -> str:
        """Conv ("same" padding) with He-normal weights ``name.weight``.

        With ``bias=True`` a small random ``name.bias`` is added as well.
        """
        cin = self.channels(x) // groups
        weight = self._normal((out_channels, cin, kernel, kernel),
                              np.sqrt(2.0 / (cin * kernel * kernel)))
        inputs = [x, self.initializer(f"{name}.weight", weight)]
        pad = kernel // 2
        y = _conv(self._probe[x], weight, stride, pad, groups)
        if bias:
            b = self._normal((out_channels,), 0.05)
            inputs.append(self.initializer(f"{name}.bias", b))
            y += b[:, None, None]
        return self.node("Conv", inputs, name, y, dilations=[1, 1], group=groups,
                         kernel_shape=[kernel, kernel], pads=[pad] * 4, strides=[stride, stride])

    def batchnorm(self, x: str, name: str, gamma: tuple[float, float] = (0.8, 1.2)) -> str:
        """BatchNormalization with running stats near the probe's channel stats.

        ``gamma`` is the uniform range of the scale; use a small one for the
        last BatchNormalization of a residual branch.
        """
        p = self._probe[x]
        c = p.shape[1]
        scale = self._uniform(c, *gamma)
        shift = self._normal((c,), 0.05)
        std = p.std(axis=(0, 2, 3)) + np.float32(1e-3)
        mean = p.mean(axis=(0, 2, 3)) + self._normal((c,)) * np.float32(0.1) * std
        var = self._uniform(c, 0.5, 1.5) * std**2
        params = {"weight": scale, "bias": shift, "running_mean": mean, "running_var": var}
        inputs = [x] + [self.initializer(f"{name}.{k}", v) for k, v in params.items()]
        factor = scale / np.sqrt(var + np.float32(BN_EPSILON))
        y = (p - mean[:, None, None]) * factor[:, None, None] + shift[:, None, None]
        return self.node("BatchNormalization", inputs, name, y, epsilon=BN_EPSILON, momentum=0.9)

    def act(self, x: str, kind: str, name: str) -> str:
        """Activation ``kind``: relu, relu6 (Clip with min/max inputs), hardswish
        or hardsigmoid (PyTorch's: alpha 1/6, beta 0.5)."""
        if kind not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {kind!r}")
        y = _ACTIVATIONS[kind](self._probe[x])
        if kind == "relu6":
            lo = self.constant("relu6.min", np.array(0.0, np.float32))
            hi = self.constant("relu6.max", np.array(6.0, np.float32))
            return self.node("Clip", [x, lo, hi], name, y)
        if kind == "hardsigmoid":
            return self.node("HardSigmoid", [x], name, y, alpha=1.0 / 6.0, beta=0.5)
        op_type = {"relu": "Relu", "hardswish": "HardSwish"}[kind]
        return self.node(op_type, [x], name, y)

    def conv_bn_act(self, x: str, name: str, out_channels: int, kernel: int, stride: int = 1,
                    groups: int = 1, act: str | None = "relu",
                    gamma: tuple[float, float] = (0.8, 1.2)) -> str:
        """Conv ``name`` -> BatchNormalization ``name.bn`` -> activation ``name.<act>``."""
        y = self.conv(x, name, out_channels, kernel, stride, groups)
        y = self.batchnorm(y, f"{name}.bn", gamma)
        return y if act is None else self.act(y, act, f"{name}.{act}")

    def add(self, a: str, b: str, name: str) -> str:
        """Elementwise Add (residual connection)."""
        return self.node("Add", [a, b], name, self._probe[a] + self._probe[b])

    def mul(self, a: str, b: str, name: str) -> str:
        """Elementwise, broadcasting Mul."""
        return self.node("Mul", [a, b], name, self._probe[a] * self._probe[b])

    def concat(self, xs: list[str], name: str) -> str:
        """Concat along channels."""
        y = np.concatenate([self._probe[x] for x in xs], axis=1)
        return self.node("Concat", xs, name, y, axis=1)

    def pool(self, x: str, op_type: str, name: str, kernel: int, stride: int,
             pad: int = 0) -> str:
        """MaxPool, or AveragePool not counting padding, with a square kernel."""
        attrs = {}
        if op_type == "MaxPool":
            y = _windows(self._probe[x], kernel, stride, pad, -np.inf).max(axis=2)
        else:
            ones = np.ones((1, 1) + self._probe[x].shape[2:], np.float32)
            y = (_windows(self._probe[x], kernel, stride, pad, 0.0).sum(axis=2)
                 / _windows(ones, kernel, stride, pad, 0.0).sum(axis=2))
            attrs["count_include_pad"] = 0
        return self.node(op_type, [x], name, y, ceil_mode=0, kernel_shape=[kernel, kernel],
                         pads=[pad] * 4, strides=[stride, stride], **attrs)

    def global_avgpool(self, x: str, name: str) -> str:
        """GlobalAveragePool to [N, C, 1, 1]."""
        y = self._probe[x].mean(axis=(2, 3), keepdims=True)
        return self.node("GlobalAveragePool", [x], name, y)

    def _flat(self, x: str) -> np.ndarray:
        return self._probe[x].reshape(len(self._probe[x]), -1)

    def flatten(self, x: str, name: str) -> str:
        """Flatten(axis=1) to [N, C*H*W]."""
        return self.node("Flatten", [x], name, self._flat(x), axis=1)

    def reshape_flat(self, x: str, name: str) -> str:
        """Reshape to [batch, -1] with a constant int64 shape initializer."""
        shape = self.initializer(f"{name}.shape", np.array([self.batch, -1], np.int64))
        return self.node("Reshape", [x, shape], name, self._flat(x))

    def dropout(self, x: str, name: str) -> str:
        """Inference-mode Dropout (an identity)."""
        return self.node("Dropout", [x], name, self._probe[x])

    def gemm(self, x: str, name: str, out_features: int, output: str | None = None,
             final: bool = False) -> str:
        """Linear layer ``Gemm(x, W, b, transB=1)``.

        Hidden layers get He-normal weights; with ``final=True`` the weights
        are scaled so the outputs have a std near 1.
        """
        p = self._probe[x]
        fan_in = p.shape[1]
        if final:
            std = 1.0 / np.sqrt(float(np.sum(p.astype(np.float64) ** 2)) / len(p) + 1e-6)
        else:
            std = np.sqrt(2.0 / fan_in)
        weight = self._normal((out_features, fan_in), std)
        bias = self._normal((out_features,), 0.05)
        inputs = [x, self.initializer(f"{name}.weight", weight),
                  self.initializer(f"{name}.bias", bias)]
        return self.node("Gemm", inputs, name, p @ weight.T + bias, output=output,
                         alpha=1.0, beta=1.0, transB=1)

    # ------------------------------------------------------------------- model
    def model(self, output: str) -> onnx.ModelProto:
        """Finish and return the opset-17 ``ModelProto``; call it once, last."""
        model, graph = self._model, self._model.graph
        model.ir_version = IR_VERSION
        model.producer_name = "workbench.zoo"
        model.opset_import.append(helper.make_opsetid("", OPSET))
        graph.name = self.name
        graph.node.extend(self.nodes)
        shape = [self.batch, 3, self.resolution, self.resolution]
        graph.input.append(helper.make_tensor_value_info("input", TensorProto.FLOAT, shape))
        graph.output.append(helper.make_tensor_value_info(
            output, TensorProto.FLOAT, [self.batch, self.channels(output)]))
        return model
