"""What the benchmark scripts share: the ONNX Runtime peer, options, and interleaved timing
(:func:`workbench.tuning.measure.time_interleaved`, which the workbench's own comparisons use too)."""
import argparse
from pathlib import Path

import numpy as np

from workbench.tuning.measure import time_interleaved  # noqa: F401  (re-exported for the benchmarks)


def parse_args(doc, argv=None, screen_runs=None):
    """The options every whole-model benchmark takes (and ``--screen-runs``, default
    ``screen_runs``, where given); makes the output folder."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["resnet50", "mobilenet_v2", "mobilenet_v3_large", "vgg16"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--pause", type=float, default=0.03, help="seconds of idle at the start of each turn")
    p.add_argument("--lead-in", type=int, default=1, help="untimed runs before each timed run")
    p.add_argument("--out", default="artifacts/benchmarks")
    if screen_runs is not None:
        p.add_argument("--screen-runs", type=int, default=screen_runs,
                       help="interleaved runs of every single-family plan, to pick the best one")
    args = p.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    return args


def ort_session(model, threads):
    """ONNX Runtime on the CPU with ``threads`` intra-op threads (the peer of every benchmark)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def median_ms(samples):
    return float(np.median(samples)) * 1e3


def iqr_ms(samples):
    return float(np.subtract(*np.percentile(samples, [75, 25]))) * 1e3
