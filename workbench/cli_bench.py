"""``workbench bench``: latency percentiles, throughput, first run after idle, slowdown under
load, per-op-type totals, beside ONNX Runtime and OpenVINO (placeholder, being written)."""
from __future__ import annotations


def add_parser(sub, model_args):
    """Register the ``bench`` sub-command on ``sub``."""
