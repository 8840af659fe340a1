"""Per layer: our tuned plan's step times beside OpenVINO's per-node perf counters, in one process.

    python benchmarks/layers_vs_openvino.py MODEL --tuned FILE [--precision bf16|f32] [--rounds 40] [--top 30]

MODEL is a zoo name or a real model of ``realmodels.py``; FILE a tuned file of it (``workbench tune``
or ``Session.export``).  Both engines run ``--rounds`` times in turn, a short sleep between (the
first quarter is warm-up); ours by ``CompiledModel.run_timed``, OpenVINO (2 threads, LATENCY,
``INFERENCE_PRECISION_HINT``) with ``PERF_COUNT``.  A layer of ours is matched to the OpenVINO
nodes that compiled the ONNX nodes it fused: OpenVINO's runtime model lists, per node, the
original layers it took (``originalLayersNames``), and it renames a convolution after the
BatchNormalization or activation it folded, so those are credited to their producer.

Prints the layers where ours takes longest beyond OpenVINO's, the nodes left unmatched, and both
engines' totals by kind.  OpenVINO's counters add a few microseconds a node (on PP-OCRv4 rec they
summed to 5.79 ms where its latency was 5.03): read gaps of that size as noise.  For finding
where the time goes, not for latency figures (``peers.py`` and ``precision.py`` give those).
"""
import argparse
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).parent))
import realmodels  # noqa: E402
from workbench import zoo  # noqa: E402
from workbench.runtime.interpreter import random_inputs  # noqa: E402
from workbench.session import Session  # noqa: E402

#: ONNX ops OpenVINO folds into the node before them, so that it carries their name.
FOLDED = {"BatchNormalization", "HardSwish", "HardSigmoid", "Relu", "Clip", "Sigmoid", "Mul", "Add"}


def model_path(name, tmp):
    if name in zoo.NAMES:
        path = Path(tmp) / f"{name}.onnx"
        path.write_bytes(zoo.build(name).SerializeToString())
        return str(path)
    return str(realmodels.fetch(name))


def original_names(compiled, path):
    """{ONNX node name: OpenVINO runtime node name}."""
    orig = {}
    for op in compiled.get_runtime_model().get_ops():
        rt = op.get_rt_info()
        names = rt["originalLayersNames"].astype(str) if "originalLayersNames" in rt else ""
        for name in filter(None, (n.strip() for n in names.split(","))):
            orig[name] = op.get_friendly_name()
    model = onnx.load(path, load_external_data=False)
    producer = {o: n.name for n in model.graph.node for o in n.output}
    for n in model.graph.node:
        if n.op_type in FOLDED and n.name in orig and n.input and producer.get(n.input[0]) not in (None, *orig):
            orig[producer[n.input[0]]] = orig[n.name]
    return orig


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--tuned", required=True)
    p.add_argument("--precision", default="bf16", choices=["bf16", "f32"])
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    import openvino as ov

    session = Session.load(args.tuned, num_threads=args.threads)
    feeds, nchw = session.random_inputs(), random_inputs(session.graph)
    with tempfile.TemporaryDirectory() as tmp:
        path = model_path(args.model, tmp)
        core = ov.Core()
        net = core.read_model(path)
        net.reshape({k: list(v.shape) for k, v in nchw.items()})
        compiled = core.compile_model(net, "CPU", {"INFERENCE_PRECISION_HINT": args.precision,
                                                   "INFERENCE_NUM_THREADS": args.threads,
                                                   "PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": True})
        orig = original_names(compiled, path)
    request, ours = compiled.create_infer_request(), session.compile()
    theirs_t, kind, mine_t = defaultdict(list), {}, defaultdict(list)
    for r in range(args.rounds):
        keep = r >= args.rounds // 4
        time.sleep(0.003)
        request.infer(nchw)
        for info in request.get_profiling_info() if keep else ():
            theirs_t[info.node_name].append(info.real_time.total_seconds() * 1e3)
            kind[info.node_name] = (info.node_type, info.exec_type)
        time.sleep(0.003)
        _, steps = ours.run_timed(feeds)
        for step, _, d in steps if keep else ():
            mine_t[step.name].append(d * 1e3)
    theirs = {k: float(np.median(v)) for k, v in theirs_t.items()}
    mine = {k: float(np.median(v)) for k, v in mine_t.items()}
    print(f"{args.model}: OpenVINO {args.precision} nodes sum to {sum(theirs.values()):.3f} ms, "
          f"our steps to {sum(mine.values()):.3f} ms")

    graph, matched, rows = session.graph, set(), []
    for layer in graph:
        names = {orig.get(n, n) for n in [layer.name, *(getattr(layer, "fused", None) or [])]} & theirs.keys()
        matched |= names
        spec = graph.input_specs(layer)[0] if graph.input_specs(layer) else None
        w = layer.consts.get(1)
        shape = f"{tuple(spec.shape) if spec is not None else ''} {tuple(w.shape) if hasattr(w, 'shape') else ''}"
        rows.append((mine.get(layer.name, 0.0) - sum(theirs[n] for n in names), layer.name, layer.op, shape,
                     session.plan.choice.get(layer.name, "").split(":", 1)[-1], mine.get(layer.name, 0.0),
                     sum(theirs[n] for n in names), ",".join(sorted({kind[n][1][:24] for n in names}))))
    print(f"our adapts {sum(v for k, v in mine.items() if k.startswith('adapt')):.3f} ms; "
          f"OpenVINO nodes matched to no layer {sum(v for k, v in theirs.items() if k not in matched):.3f} ms")
    print(f"\n{'layer':24s} {'op':12s} {'input, weights':44s} {'our routine':34s} {'ours':>7s} {'OV':>7s}  OV kernel")
    for gap, name, op, shape, routine, m, t, ex in sorted(rows, reverse=True)[:args.top]:
        print(f"{name[:24]:24s} {op[:12]:12s} {shape[:44]:44s} {routine[:34]:34s} {m:7.3f} {t:7.3f}  {ex}")
    print("\nOpenVINO nodes matched to no layer:")
    for k, v in sorted(((k, v) for k, v in theirs.items() if k not in matched and v > 0), key=lambda kv: -kv[1])[:8]:
        print(f"  {k[:50]:50s} {kind[k][0][:16]:16s} {kind[k][1][:24]:24s} {v:7.3f}")
    by_kind, ours_by = Counter(), Counter()
    for k, v in theirs.items():
        by_kind[kind[k]] += v
    for layer in graph:
        ours_by[(layer.op, session.plan.choice.get(layer.name, "").split("/")[-1])] += mine.get(layer.name, 0.0)
    print("\nOpenVINO by kind:")
    for (t, e), v in by_kind.most_common(12):
        print(f"  {t[:18]:18s} {e[:28]:28s} {v:7.3f}")
    print("ours by kind:")
    for (op, algo), v in ours_by.most_common(12):
        print(f"  {op[:18]:18s} {algo[:28]:28s} {v:7.3f}")


if __name__ == "__main__":
    main()
