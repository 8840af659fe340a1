"""Op semantics: one class per ONNX op, registered by name when its module is imported.

An :class:`Op` says three things about its op, and nothing about how fast it runs (that is the
routines' business):

- ``normalize(node)``: ONNX attributes and constant inputs -> the layer's normalised ``attrs``
  (explicit pads, resolved ``auto_pad``, opset differences folded away);
- ``infer(layer, specs)``: static shape inference, input specs -> output specs;
- ``compute(layer, args)``: the NumPy reference, the oracle every routine is checked against.
"""
from .base import IMPORTS, OPS, Op, check, get, lookup, same_as_input  # noqa: F401

# Importing the families registers their ops.
from . import activation, elementwise, conv, pool, linalg, normalization, tensor, shape, resize, reduce, recurrent, quantized, quantized_ms  # noqa: E402,F401,E501
