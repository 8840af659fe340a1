"""A small CNN trained on scikit-learn's bundled handwritten digits, for the mixed-precision
notebook: a classifier whose accuracy on held-out data is a real figure, so that what a lower
precision costs in accuracy can be measured, not only its distance from float32.

The 1797 digits (8x8, grey levels 0-16) are upscaled by ``scale`` (nearest) and normalised; a
seeded 70/30 split keeps 539 for testing.  The network, trained here with NumPy (Adam on softmax
cross-entropy, seeded, a few seconds on two cores):

    Conv 3x3 (1 -> 16) + ReLU, MaxPool 2, Conv 3x3 (16 -> 32) + ReLU, MaxPool 2,
    Conv 3x3 (32 -> 64) + ReLU, GlobalAveragePool, Flatten, Gemm (64 -> 10)

:func:`build` returns the ONNX model (batch 1) with the held-out images and labels.  scikit-learn
is needed for the data only (the notebooks' extra installs it).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHANNELS = (16, 32, 64)


@dataclass
class Digits:
    """The trained model and its data: ``model`` (ONNX, NCHW input ``image`` (1, 1, S, S), output
    ``logits`` (1, 10)), held-out ``x_test`` (N, 1, S, S) float32 and ``y_test`` (N,), and the
    accuracy NumPy's own forward pass reached on both splits."""

    model: object
    x_test: np.ndarray
    y_test: np.ndarray
    x_train: np.ndarray
    train_accuracy: float
    test_accuracy: float


def load(scale=2, seed=0):
    """``(x_train, y_train, x_test, y_test)``: the digits upscaled by ``scale``, NHWC float32
    normalised to mean 0 and unit deviation, split 70/30 by ``seed``."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:   # pragma: no cover - the notebooks' extra installs it
        raise ImportError("the digits model needs scikit-learn's bundled data: pip install scikit-learn") from e
    d = load_digits()
    x = np.kron(d.images.astype(np.float32) / 16.0, np.ones((scale, scale), np.float32))[..., None]
    x = (x - 0.3) / 0.4
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(0.7 * len(x))
    tr, te = order[:cut], order[cut:]
    return x[tr], d.target[tr], x[te], d.target[te]


def _cols(x):
    """3x3 windows (padding 1) of NHWC ``x`` as rows (N * H * W, 9 * C), taps (row, column, channel)."""
    n, h, w, c = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(1, 2))   # (N, H, W, C, 3, 3)
    return np.ascontiguousarray(win.transpose(0, 1, 2, 4, 5, 3)).reshape(n * h * w, 9 * c)


def _uncols(d, shape):
    """The gradient of :func:`_cols`: rows (N * H * W, 9 * C) summed back into NHWC ``shape``."""
    n, h, w, c = shape
    d = d.reshape(n, h, w, 3, 3, c)
    out = np.zeros((n, h + 2, w + 2, c), d.dtype)
    for i in range(3):
        for j in range(3):
            out[:, i:i + h, j:j + w] += d[:, :, :, i, j]
    return out[:, 1:-1, 1:-1]


def _init(rng):
    params, c = {}, 1
    for k, f in enumerate(CHANNELS):
        params[f"w{k}"] = (rng.standard_normal((9 * c, f)) * np.sqrt(2.0 / (9 * c))).astype(np.float32)
        params[f"b{k}"] = np.zeros(f, np.float32)
        c = f
    params["wf"] = (rng.standard_normal((c, 10)) * np.sqrt(1.0 / c)).astype(np.float32)
    params["bf"] = np.zeros(10, np.float32)
    return params


def _forward(params, x, keep=False):
    """Logits of NHWC ``x``; with ``keep``, also what the backward pass needs."""
    tape, a = [], x
    for k in range(len(CHANNELS)):
        cols = _cols(a)
        z = cols @ params[f"w{k}"] + params[f"b{k}"]
        n, h, w, _ = a.shape
        r = np.maximum(z, 0).reshape(n, h, w, -1)
        if k < len(CHANNELS) - 1:   # MaxPool 2
            blocks = r.reshape(n, h // 2, 2, w // 2, 2, -1)
            pooled = blocks.max(axis=(2, 4))
            tape.append((a.shape, cols, z, blocks, pooled))
            a = pooled
        else:
            tape.append((a.shape, cols, z, None, None))
            a = r
    g = a.mean(axis=(1, 2))
    logits = g @ params["wf"] + params["bf"]
    return (logits, (tape, a, g)) if keep else logits


def _backward(params, x, y):
    logits, (tape, last, g) = _forward(params, x, keep=True)
    n = len(x)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    loss = -np.log(p[np.arange(n), y] + 1e-12).mean()
    d = p
    d[np.arange(n), y] -= 1
    d /= n
    grads = {"wf": g.T @ d, "bf": d.sum(axis=0)}
    da = np.broadcast_to((d @ params["wf"].T)[:, None, None, :] / (last.shape[1] * last.shape[2]), last.shape)
    for k in reversed(range(len(CHANNELS))):
        shape, cols, z, blocks, pooled = tape[k]
        if blocks is not None:   # MaxPool 2: to every tap that held the maximum
            hit = blocks == pooled[:, :, None, :, None, :]
            da = (hit * da[:, :, None, :, None, :]).reshape(shape[0], shape[1], shape[2], -1)
        dz = da.reshape(z.shape) * (z > 0)
        grads[f"w{k}"] = cols.T @ dz
        grads[f"b{k}"] = dz.sum(axis=0)
        if k:
            da = _uncols(dz @ params[f"w{k}"].T, shape)
    return loss, grads


def accuracy(params, x, y, batch=256):
    """Top-1 accuracy of NumPy's forward pass on NHWC ``x``."""
    hits = sum(int((_forward(params, x[i:i + batch]).argmax(axis=1) == y[i:i + batch]).sum())
               for i in range(0, len(x), batch))
    return hits / len(x)


def train(x, y, epochs=12, batch=64, lr=3e-3, seed=0):
    """The parameters after ``epochs`` of Adam on ``(x, y)`` (NHWC), seeded."""
    rng = np.random.default_rng(seed)
    params = _init(rng)
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(p) for k, p in params.items()}
    step = 0
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            _, grads = _backward(params, x[idx], y[idx])
            step += 1
            for k, gk in grads.items():
                m[k] = 0.9 * m[k] + 0.1 * gk
                v[k] = 0.999 * v[k] + 0.001 * gk * gk
                mh, vh = m[k] / (1 - 0.9 ** step), v[k] / (1 - 0.999 ** step)
                params[k] = (params[k] - lr * mh / (np.sqrt(vh) + 1e-8)).astype(np.float32)
    return params


def to_onnx(params, size):
    """The trained network as an ONNX model (opset 17), input ``image`` (1, 1, size, size)."""
    from onnx import TensorProto, helper, numpy_helper
    nodes, inits, last, c = [], [], "image", 1
    for k, f in enumerate(CHANNELS):
        w = params[f"w{k}"].reshape(3, 3, c, f).transpose(3, 2, 0, 1)
        inits += [numpy_helper.from_array(np.ascontiguousarray(w), f"conv{k}.weight"),
                  numpy_helper.from_array(params[f"b{k}"], f"conv{k}.bias")]
        nodes += [helper.make_node("Conv", [last, f"conv{k}.weight", f"conv{k}.bias"], [f"conv{k}"], name=f"conv{k}",
                                   kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"conv{k}"], [f"relu{k}"], name=f"relu{k}")]
        last = f"relu{k}"
        if k < len(CHANNELS) - 1:
            nodes.append(helper.make_node("MaxPool", [last], [f"pool{k}"], name=f"pool{k}", kernel_shape=[2, 2],
                                          strides=[2, 2]))
            last = f"pool{k}"
        c = f
    nodes += [helper.make_node("GlobalAveragePool", [last], ["gap"], name="gap"),
              helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
              helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1)]
    inits += [numpy_helper.from_array(np.ascontiguousarray(params["wf"].T), "fc.weight"),
              numpy_helper.from_array(params["bf"], "fc.bias")]
    graph = helper.make_graph(nodes, "digits_cnn",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, size, size])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="workbench.zoo.digits")


def build(scale=2, epochs=12, seed=0):
    """Train the digits CNN (see the module doc) and return :class:`Digits`."""
    x_tr, y_tr, x_te, y_te = load(scale, seed)
    params = train(x_tr, y_tr, epochs=epochs, seed=seed)
    nchw = lambda a: np.ascontiguousarray(a.transpose(0, 3, 1, 2))   # noqa: E731
    return Digits(to_onnx(params, x_tr.shape[1]), nchw(x_te), y_te.astype(np.int64), nchw(x_tr),
                  accuracy(params, x_tr, y_tr), accuracy(params, x_te, y_te))
