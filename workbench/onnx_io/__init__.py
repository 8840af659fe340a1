"""ONNX in and out: reading a file into a Graph, writing a Graph (and its plan) back, and
ONNX Runtime, the correctness oracle."""
