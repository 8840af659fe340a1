"""Single-op routines against ONNX Runtime on the shapes of issue 13 (Softmax, MatMul,
ConvTranspose, detectors' convolutions, depthwise, pools, global pools, Resize, Concat) and of a
recogniser's recurrence (LSTM, GRU, RNN), timed interleaved.

    python benchmarks/ops.py [--threads 2] [--runs 30] [--only softmax maxpool ...] [--out DIR]

Per case: a one-node ONNX model; ONNX Runtime (ORT_ENABLE_ALL, ``--threads`` intra-op threads)
runs it, and every applicable routine of ours (the reference left out) runs the imported layer on
the same thread count, BLAS limited to one thread as in the executor.  All of them take turns
(:func:`workbench.tuning.measure.time_interleaved`: a short idle pause, one untimed lead-in run, one
timed run, the order rotating each round).  Reports the median per engine, our best routine in
each layout and its ratio to ORT's median.  Writes DIR/ops.md and DIR/ops.json.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).parent))
import workbench  # noqa: E402
from workbench import routines  # noqa: E402
from workbench.runtime.blas import blas_limit  # noqa: E402
from workbench.runtime.cpu import cpu_name  # noqa: E402
from workbench.tuning.measure import layer_arrays, time_interleaved  # noqa: E402
from _common import ort_session  # noqa: E402


def _model(op, inputs, attrs=None, inits=(), extra_inputs=()):
    """One ``op`` node over float32 ``inputs`` [(name, shape)] and constant ``inits`` [(name, array)]."""
    node = helper.make_node(op, [n for n, _ in inputs] + [n for n, _ in inits] + list(extra_inputs), ["y"],
                            **(attrs or {}))
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs]
    graph = helper.make_graph([node], op, vi, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(np.asarray(v), n) for n, v in inits])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _pool(op, shape, k, s, p, **extra):
    pads = list(p) if isinstance(p, (list, tuple)) else [p] * 4
    return _model(op, [("x", shape)], dict(kernel_shape=[k, k], strides=[s, s], pads=pads, **extra))


def _resize(shape, mode, scale=2.0, ctm="asymmetric"):
    scales = np.array([1, 1, scale, scale], np.float32)
    attrs = dict(mode=mode, coordinate_transformation_mode=ctm)
    if mode == "nearest":
        attrs["nearest_mode"] = "floor"
    return _model("Resize", [("x", shape)], attrs, inits=[("roi", np.zeros(0, np.float32)), ("scales", scales)])


def _convt(c, m, hw, k, s, p):
    return _model("ConvTranspose", [("x", [1, c, hw, hw])], dict(kernel_shape=[k, k], strides=[s, s], pads=[p] * 4),
                  inits=[("w", _rand(c, m, k, k) * 0.1), ("b", _rand(m))])


def _recurrent(op, seq, inp, hid, **attrs):
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[op] * hid
    inits = [("w", _rand(2, gates, inp, seed=1) * 0.05), ("r", _rand(2, gates, hid, seed=2) * 0.05),
             ("b", _rand(2, 2 * gates, seed=3) * 0.1)]
    return _model(op, [("x", [seq, 1, inp])], dict(hidden_size=hid, direction="bidirectional", **attrs), inits)


def _conv(c, m, hw, k, s, group=1, silu=False):
    """A Conv (pads k // 2, bias) as the detectors have them, SiLU spelled Sigmoid/Mul: one layer
    once imported and fused."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])
    conv = helper.make_node("Conv", ["x", "w", "b"], ["c" if silu else "y"], kernel_shape=[k, k], strides=[s, s],
                            pads=[k // 2] * 4, group=group)
    nodes = [conv] + ([helper.make_node("Sigmoid", ["c"], ["g"]), helper.make_node("Mul", ["c", "g"], ["y"])]
                      if silu else [])
    inits = [numpy_helper.from_array(_rand(m, c // group, k, k) * 0.1, "w"), numpy_helper.from_array(_rand(m), "b")]
    graph = helper.make_graph(nodes, "conv", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


CASES = {
    # YOLOv8-style stride-2 and small-channel 3x3 convolutions with SiLU (nudenet 320n's), and
    # PP-OCRv6 det's 24-channel stride-2 one.
    "conv": [
        ("Conv 3x3 s2 16->32 1x16x160x160 SiLU", lambda: _conv(16, 32, 160, 3, 2, silu=True)),
        ("Conv 3x3 s2 64->128 1x64x40x40 SiLU", lambda: _conv(64, 128, 40, 3, 2, silu=True)),
        ("Conv 3x3 s1 16->16 1x16x80x80 SiLU", lambda: _conv(16, 16, 80, 3, 1, silu=True)),
        ("Conv 3x3 s1 64->64 1x64x20x20 SiLU", lambda: _conv(64, 64, 20, 3, 1, silu=True)),
        ("Conv 3x3 s2 48->24 1x48x320x320", lambda: _conv(48, 24, 320, 3, 2)),
        # PP-OCRv6 det's memory-bound 1x1 layers at 160x160 (10 MB a tensor).
        ("Conv 1x1 48->96 1x48x160x160", lambda: _conv(48, 96, 160, 1, 1)),
        ("Conv 1x1 96->48 1x96x160x160", lambda: _conv(96, 48, 160, 1, 1)),
    ],
    "depthwise": [
        ("Depthwise 7x7 s1 1x96x160x160", lambda: _conv(96, 96, 160, 7, 1, group=96)),
        ("Depthwise 5x5 s1 1x672x14x14", lambda: _conv(672, 672, 14, 5, 1, group=672)),
        ("Depthwise 3x3 s1 1x576x14x14", lambda: _conv(576, 576, 14, 3, 1, group=576)),
    ],
    "globalpool": [
        ("GlobalAveragePool 1x96x160x160", lambda: _model("GlobalAveragePool", [("x", [1, 96, 160, 160])])),
        ("ReduceMean H,W 1x48x160x160", lambda: _model("ReduceMean", [("x", [1, 48, 160, 160])],
                                                       dict(axes=[2, 3], keepdims=1))),
    ],
    "softmax": [
        ("Softmax last axis 1x40x6625", lambda: _model("Softmax", [("x", [1, 40, 6625])], dict(axis=-1))),
        ("LogSoftmax last axis 1x40x6625", lambda: _model("LogSoftmax", [("x", [1, 40, 6625])], dict(axis=-1))),
        ("Softmax axis 1 1x80x8400", lambda: _model("Softmax", [("x", [1, 80, 8400])], dict(axis=1))),
        ("Softmax attention 1x8x400x400", lambda: _model("Softmax", [("x", [1, 8, 400, 400])], dict(axis=-1))),
    ],
    "matmul": [
        ("MatMul QK^T 1x4x400x32 @ 1x4x32x400", lambda: _model("MatMul", [("a", [1, 4, 400, 32]), ("b", [1, 4, 32, 400])])),
        ("MatMul AV 1x4x400x400 @ 1x4x400x32", lambda: _model("MatMul", [("a", [1, 4, 400, 400]), ("b", [1, 4, 400, 32])])),
        ("MatMul 1x8x64x64 @ 1x8x64x64", lambda: _model("MatMul", [("a", [1, 8, 64, 64]), ("b", [1, 8, 64, 64])])),
        ("MatMul 3-D 1x400x256 @ W 256x256", lambda: _model("MatMul", [("a", [1, 400, 256])],
                                                             inits=[("w", _rand(256, 256) * 0.05)])),
        ("MatMul classifier 1x40x120 @ W 120x6625", lambda: _model("MatMul", [("a", [1, 40, 120])],
                                                                    inits=[("w", _rand(120, 6625) * 0.05)])),
        ("MatMul 3-D 1x40x120 @ W 120x360", lambda: _model("MatMul", [("a", [1, 40, 120])],
                                                            inits=[("w", _rand(120, 360) * 0.05)])),
    ],
    "convtranspose": [
        ("ConvTranspose 2x2 s2 1x128x40x40->64", lambda: _convt(128, 64, 40, 2, 2, 0)),
        ("ConvTranspose 2x2 s2 1x64x80x80->32", lambda: _convt(64, 32, 80, 2, 2, 0)),
        ("ConvTranspose 4x4 s2 p1 1x64x40x40->64", lambda: _convt(64, 64, 40, 4, 2, 1)),
    ],
    "maxpool": [
        ("MaxPool 3x3 s2 p1 1x64x112x112", lambda: _pool("MaxPool", [1, 64, 112, 112], 3, 2, 1)),
        ("MaxPool 2x2 s2 1x64x80x80", lambda: _pool("MaxPool", [1, 64, 80, 80], 2, 2, 0)),
        # PP-OCRv6's stem: stride 1, padded on the bottom and right only (Paddle's "SAME").
        ("MaxPool 2x2 s1 p(0,0,1,1) 1x24x320x320", lambda: _pool("MaxPool", [1, 24, 320, 320], 2, 1, (0, 0, 1, 1))),
        ("MaxPool 5x5 s1 p2 1x256x20x20", lambda: _pool("MaxPool", [1, 256, 20, 20], 5, 1, 2)),
        ("MaxPool 9x9 s1 p4 1x256x20x20", lambda: _pool("MaxPool", [1, 256, 20, 20], 9, 1, 4)),
        ("MaxPool 13x13 s1 p6 1x256x20x20", lambda: _pool("MaxPool", [1, 256, 20, 20], 13, 1, 6)),
    ],
    "avgpool": [
        ("AveragePool 3x3 s1 p1 1x64x56x56", lambda: _pool("AveragePool", [1, 64, 56, 56], 3, 1, 1)),
        ("AveragePool 2x2 s2 1x64x80x80", lambda: _pool("AveragePool", [1, 64, 80, 80], 2, 2, 0)),
    ],
    "resize": [
        ("Resize nearest 2x 1x256x20x20", lambda: _resize([1, 256, 20, 20], "nearest")),
        ("Resize nearest 2x 1x128x40x40", lambda: _resize([1, 128, 40, 40], "nearest")),
        ("Resize linear 2x half_pixel 1x64x80x80", lambda: _resize([1, 64, 80, 80], "linear", ctm="half_pixel")),
    ],
    # A CRNN recogniser's bidirectional recurrence over 80 columns, and a smaller one.
    "recurrent": [
        ("LSTM bidirectional 80x1x512 h256", lambda: _recurrent("LSTM", 80, 512, 256)),
        ("GRU bidirectional 80x1x512 h256", lambda: _recurrent("GRU", 80, 512, 256, linear_before_reset=1)),
        ("RNN bidirectional 40x1x128 h128", lambda: _recurrent("RNN", 40, 128, 128)),
    ],
    "concat": [
        ("Concat 2x 1x128x40x40 axis 1", lambda: _model("Concat", [("a", [1, 128, 40, 40]), ("b", [1, 128, 40, 40])],
                                                        dict(axis=1))),
        ("Concat 4x 1x64x80x80 axis 1", lambda: _model("Concat", [(n, [1, 64, 80, 80]) for n in "abcd"], dict(axis=1))),
    ],
}


def bench_case(label, model, threads, runs, pause):
    graph = workbench.load(model.SerializeToString())
    layers = list(graph)
    if len(layers) != 1:
        raise RuntimeError(f"{label}: imported as {len(layers)} layers")
    layer = layers[0]
    feeds = workbench.random_inputs(graph, seed=0)
    sess = ort_session(model, threads)
    runners = {"onnxruntime": lambda: sess.run(None, feeds)}
    for r in routines.applicable(graph, layer):
        if r.algo == "reference":
            continue
        args, outs = layer_arrays(graph, layer, r)
        state = r.prepare(layer)
        runners[r.descriptor] = (lambda r=r, s=state, a=args, o=outs: r.run(layer, s, a, o, threads))
    with blas_limit(1):
        samples = time_interleaved(runners, runs, warmup=3, pause=pause, lead_in=1)
    med = {k: float(np.median(v)) * 1e3 for k, v in samples.items()}
    ort = med.pop("onnxruntime")
    best = {}
    for d, ms in med.items():
        lay = d.split(":")[2].split("/")[0]
        if lay not in best or ms < best[lay][1]:
            best[lay] = (d, ms)
    return dict(case=label, op=layer.op, ort_ms=ort, ours_ms=med,
                best={lay: dict(routine=d, ms=ms, ratio=ms / ort) for lay, (d, ms) in best.items()})


def write_markdown(rows, path, threads, runs):
    lines = [f"# Single-op routines vs ONNX Runtime ({cpu_name()}, {threads} threads, median of {runs} "
             "interleaved turns)", "",
             "| case | ORT ms | best NCHW (ms, x ORT) | best NHWC (ms, x ORT) |", "|---|---|---|---|"]
    for r in rows:
        cells = []
        for lay in ("nchw", "nhwc"):
            b = r["best"].get(lay)
            cells.append(f"{b['routine'].split('/')[1]} {b['ms']:.3f} ({b['ratio']:.2f}x)" if b else "-")
        lines.append(f"| {r['case']} | {r['ort_ms']:.3f} | {cells[0]} | {cells[1]} |")
    path.write_text("\n".join(lines) + "\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--pause", type=float, default=0.005, help="seconds of idle before each turn")
    p.add_argument("--only", nargs="+", choices=sorted(CASES), default=sorted(CASES))
    p.add_argument("--out", default="artifacts/benchmarks")
    p.add_argument("--name", default="ops", help="report file stem")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for group in args.only:
        for label, build in CASES[group]:
            row = bench_case(label, build(), args.threads, args.runs, args.pause)
            rows.append(row)
            print(f"{label}: ORT {row['ort_ms']:.3f} ms; " + "; ".join(
                f"{d.split(':')[2]} {ms:.3f}" for d, ms in sorted(row["ours_ms"].items(), key=lambda kv: kv[1])),
                file=sys.stderr)
    (out / f"{args.name}.json").write_text(json.dumps(rows, indent=1))
    write_markdown(rows, out / f"{args.name}.md", args.threads, args.runs)
    print((out / f"{args.name}.md").read_text())


if __name__ == "__main__":
    main()
