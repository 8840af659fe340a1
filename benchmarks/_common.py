"""What the benchmark scripts share: the ONNX Runtime peer and interleaved timing."""
import argparse
import time
from pathlib import Path

import numpy as np


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


def time_interleaved(runners, runs, warmup=3, pause=0.03, lead_in=1):
    """``{name: [seconds, ...]}``: ``warmup`` rounds, then ``runs`` rounds of every runner in
    turn, the order rotating from round to round.  A turn is: ``pause`` seconds idle, so the previous runtime's spinning worker threads
    (ORT's pool, OpenMP's) go to sleep instead of stealing cores; ``lead_in`` untimed runs,
    which bring the runner's data back into the caches and wake the vCPUs the pause let sleep
    (on this VM their wake-up alone costs MobileNetV2 1 to 10 ms); one timed run.  The timed run
    so sees back-to-back inference, and machine noise hits every runner alike."""
    for _ in range(warmup):
        for run in runners.values():
            run()
    samples = {k: [] for k in runners}
    order = list(runners)
    for r in range(runs):
        # The order rotates every round, so no runner always follows the same other one.
        for k in order[r % len(order):] + order[:r % len(order)]:
            run = runners[k]
            time.sleep(pause)
            for _ in range(lead_in):
                run()
            t0 = time.perf_counter()
            run()
            samples[k].append(time.perf_counter() - t0)
    return samples


def median_ms(samples):
    return float(np.median(samples)) * 1e3


def iqr_ms(samples):
    return float(np.subtract(*np.percentile(samples, [75, 25]))) * 1e3
