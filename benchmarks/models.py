"""Whole-model latency of each zoo model under each single routine family, beside ONNX Runtime.

    python benchmarks/models.py [--models resnet50 mobilenet_v2 mobilenet_v3_large vgg16] [--runs 30]

A family is one routine filter (``cpu:float32:nhwc/im2col``: every layer it applies to, the
nearest applicable routine elsewhere), the families being every (layout, algorithm) pair of the
Conv routines plus the plain layout families.  Batch 1, 224x224, 2 threads for everyone.  Runs
are interleaved (ORT, family 1, family 2, ..., repeat) so machine noise hits all alike, each
turn one untimed run then one timed run (see ``_common.time_interleaved``); medians of
``--runs`` timed runs after warm-up.  Writes artifacts/benchmarks/models.{md,json}.
"""
import json
import sys
from pathlib import Path

import workbench
from workbench import zoo
from workbench.tuning.filters import assign
from workbench.onnx_io.ort import relative_error
from workbench.runtime.compiled import CompiledModel
from workbench.runtime.cpu import cpu_name
from workbench.session_comparisons import conv_families

sys.path.insert(0, str(Path(__file__).parent))
from _common import iqr_ms, median_ms, ort_session, parse_args, time_interleaved  # noqa: E402


def main(argv=None):
    args = parse_args(__doc__, argv)
    out = Path(args.out)
    results = []
    for name in args.models:
        model = zoo.build(name)
        graph = workbench.load(model)
        feeds = workbench.random_inputs(graph)
        sess = ort_session(model, args.threads)
        reference = sess.run(None, feeds)[0]
        runners = {"onnxruntime": lambda: sess.run(None, feeds)}
        info = {}
        n_conv = sum(l.op == "Conv" for l in graph)
        for fam in conv_families():
            assignment, fallbacks = assign(graph, [fam])
            if fam.split("/")[1] != "*" and sum(graph.layer(f.layer).op == "Conv" for f in fallbacks) == n_conv:
                continue   # the family's conv algorithm applies to none of this model's convs
            compiled = CompiledModel(graph, assignment, num_threads=args.threads)
            err = relative_error(compiled.run(feeds)["logits"], reference)
            info[fam] = dict(fallbacks=len(fallbacks), adapts=len(compiled.adapts), rel_error=err,
                             reference_layers=sum(d.endswith("/reference") for d in assignment.values()))
            runners[fam] = (lambda c=compiled: c.run(feeds))
        samples = time_interleaved(runners, args.runs, args.warmup, args.pause, args.lead_in)
        ort_ms = median_ms(samples["onnxruntime"])
        for k, s in samples.items():
            ms = median_ms(s)
            results.append(dict(model=name, config=k, median_ms=ms, iqr_ms=iqr_ms(s),
                                ratio_vs_ort=ms / ort_ms, **info.get(k, {})))
            print(f"{name:20s} {k:28s} {ms:8.2f} ms  x{ms / ort_ms:.2f} vs ORT", file=sys.stderr)
    (out / "models.json").write_text(json.dumps({"machine": cpu_name(), "threads": args.threads, "runs": args.runs,
                                                 "results": results}, indent=1))
    lines = [f"# Whole-model latency, batch 1, 224x224, {args.threads} threads, median of {args.runs} interleaved runs",
             f"machine: {cpu_name()}", "",
             "| model | configuration | median ms | IQR ms | ours / ORT | adapts | fallbacks | reference layers | rel. error |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['model']} | `{r['config']}` | {r['median_ms']:.2f} | {r['iqr_ms']:.2f} | {r['ratio_vs_ort']:.2f} "
                     f"| {r.get('adapts', '')} | {r.get('fallbacks', '')} | {r.get('reference_layers', '')} "
                     f"| {r['rel_error']:.1e} |" if "rel_error" in r else
                     f"| {r['model']} | {r['config']} | {r['median_ms']:.2f} | {r['iqr_ms']:.2f} | 1.00 | | | | |")
    (out / "models.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
