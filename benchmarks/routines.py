"""Per-layer GFLOP/s of every Conv routine on every distinct Conv layer of the zoo's big models.

    python benchmarks/routines.py [--models resnet50 mobilenet_v2 vgg16] [--threads 2] [--out DIR]

Batch 1, 224x224.  GFLOP/s counts direct-convolution FLOPs (2 x MACs) for every routine, so
Winograd can pass the matmul rate.  NumPy's float32 matmul rate (1024^3) is measured in the same
run, before and after, as the yardstick.  Writes DIR/routines.md and DIR/routines.json.
"""
import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

import workbench
from workbench.ir import ops
from workbench import routines, zoo
from workbench.runtime.cpu import cpu_name
from workbench.tuning.measure import matmul_gflops, time_routine


def signature(graph, layer):
    specs = graph.input_specs(layer)
    a = layer.attrs
    return (specs[0].shape, specs[1].shape, tuple(a["strides"]), tuple(a["pads"]), tuple(a["dilations"]), a["group"])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["resnet50", "mobilenet_v2", "vgg16"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--out", default="artifacts/benchmarks")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    matmul_before = matmul_gflops(num_threads=args.threads)
    rows = []
    for model in args.models:
        graph = workbench.load(zoo.build(model))
        seen = set()
        for layer in graph:
            if layer.op != "Conv" or signature(graph, layer) in seen:
                continue
            seen.add(signature(graph, layer))
            specs = graph.input_specs(layer)
            macs = ops.get("Conv").macs(layer, specs)
            for r in routines.applicable(graph, layer):
                if r.algo == "reference":
                    continue
                t = time_routine(graph, layer, r, repeats=args.repeats, num_threads=args.threads, min_time=0.05)
                rows.append(dict(model=model, layer=layer.name, input=list(specs[0].shape), weight=list(specs[1].shape),
                                 stride=layer.attrs["strides"][0], group=layer.attrs["group"], routine=r.descriptor,
                                 median_ms=t.median * 1e3, iqr_ms=t.spread * 1e3, gflops=2 * macs / t.median / 1e9))
            print(f"{model} {layer.name}: " + ", ".join(f"{r['routine'].split(':')[2]} {r['gflops']:.0f}"
                                                      for r in rows if r["layer"] == layer.name and r["model"] == model),
                  file=sys.stderr)
    matmul_after = matmul_gflops(num_threads=args.threads)
    matmul = (matmul_before + matmul_after) / 2

    best = {}
    for r in rows:
        key = (r["model"], r["layer"])
        if key not in best or r["gflops"] > best[key]["gflops"]:
            best[key] = r
    res3x3 = [b for (m, _), b in best.items() if m == "resnet50" and b["weight"][2:] == [3, 3]]
    summary = {
        "machine": cpu_name(), "python": platform.python_version(), "threads": args.threads,
        "numpy_matmul_gflops": matmul, "numpy_matmul_before_after": [matmul_before, matmul_after],
        "resnet50_3x3_best_median_pct_of_matmul": (100 * float(np.median([b["gflops"] for b in res3x3])) / matmul
                                                   if res3x3 else None),
        "resnet50_3x3_best_min_pct_of_matmul": (100 * min(b["gflops"] for b in res3x3) / matmul if res3x3 else None),
    }
    (out / "routines.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    lines = [f"# Conv routines, batch 1, {args.threads} threads, {cpu_name()}", "",
             f"NumPy float32 matmul (1024^3): {matmul:.1f} GFLOP/s (before {matmul_before:.1f}, after {matmul_after:.1f})", ""]
    if res3x3:
        lines.append(f"ResNet-50 3x3 layers, best routine per layer: median {summary['resnet50_3x3_best_median_pct_of_matmul']:.0f}% "
                     f"of the matmul rate, worst {summary['resnet50_3x3_best_min_pct_of_matmul']:.0f}%")
        lines.append("")
    lines += ["| model | layer | input | weight | s | g | routine | ms | IQR ms | GFLOP/s | % matmul |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        star = " **best**" if best[(r["model"], r["layer"])] is r else ""
        lines.append(f"| {r['model']} | {r['layer']} | {'x'.join(map(str, r['input']))} | {'x'.join(map(str, r['weight']))} "
                     f"| {r['stride']} | {r['group']} | `{r['routine']}`{star} | {r['median_ms']:.3f} | {r['iqr_ms']:.3f} "
                     f"| {r['gflops']:.1f} | {100 * r['gflops'] / matmul:.0f}% |")
    (out / "routines.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:6]))
    print(f"wrote {out / 'routines.md'} and {out / 'routines.json'}")


if __name__ == "__main__":
    main()
