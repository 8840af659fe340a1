"""Tuning end to end on each zoo model: how long it takes, and how fast the tuned plan runs.

    python benchmarks/tune.py [--models resnet50 mobilenet_v2 mobilenet_v3_large vgg16] [--runs 30]

Per model, in one run (batch 1, 224x224, 2 threads for everyone):

- tuning time from an empty profile database (profiling + search) and again from the now warm
  one (a fresh session on the same file), and the search time alone;
- latency of the tuned plan beside the greedy plan, the best single-family plan and ONNX
  Runtime: medians of ``--runs`` interleaved runs after warm-up (see
  ``_common.time_interleaved``).  The best family is picked first, in a screening round of
  ``--screen-runs`` interleaved runs of every family's plan with ONNX Runtime, and then measured
  again beside the others: the minimum of ~17 noisy medians is biased low, and 19 runners taking
  turns push each other's data out of the caches.  Beside the ratios of medians, the paired
  ratios (median over rounds of the ratio within a round), how many layers the tuned plan
  chooses differently from the best family's, and the ratio of their predicted costs: plans
  that differ in three layers by 0.2% predicted measure within the noise of each other.  Where
  the best family's plan *is* the tuned plan (no layer unlike), it is timed once, not twice:
  two runners of one plan differ only by noise (1-3% here).  That noise is measured in every
  run: the tuned plan compiled twice, the second copy ("tuned again") timed as one more runner;
- the tuned plan's predicted latency (sum of profiled costs) against its latency measured alone,
  back to back (``Session.measure``: how it runs deployed; the interleaved runs are for the
  ratios to the peers).

The profile database is a temporary file, so the user's own is neither used nor touched.
Writes artifacts/benchmarks/tune.{md,json}.
"""
import json
import sys

import numpy as np
import tempfile
import time
from pathlib import Path

import workbench
from workbench import zoo
from workbench.onnx_io.ort import relative_error
from workbench.runtime.compiled import CompiledModel
from workbench.runtime.cpu import cpu_name
from workbench.session import Session

sys.path.insert(0, str(Path(__file__).parent))
from _common import iqr_ms, median_ms, ort_session, parse_args, time_interleaved  # noqa: E402


def paired_ratio(a, b):
    """Median over rounds of ``a[i] / b[i]`` (samples of two interleaved runners, round by round)."""
    return float(np.median(np.asarray(a) / np.asarray(b)))


def tune_twice(model, db, threads):
    """``(session tuned from an empty db, seconds, seconds from the warm db)``."""
    t0 = time.perf_counter()
    s = Session.from_onnx(model, num_threads=threads, db=db)
    s.tune()
    empty_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    warm = Session.from_onnx(model, num_threads=threads, db=db)
    warm.tune()
    warm_s = time.perf_counter() - t0
    assert warm.profiled.measured == 0, "the warm database should hold every record"
    return s, empty_s, warm_s, warm.search_s


def main(argv=None):
    args = parse_args(__doc__, argv, screen_runs=10)
    out = Path(args.out)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            model = zoo.build(name)
            session, empty_s, warm_s, search_s = tune_twice(model, Path(tmp) / f"{name}.sqlite", args.threads)
            graph = session.graph
            feeds = workbench.random_inputs(graph)
            ort = ort_session(model, args.threads)
            reference = ort.run(None, feeds)[0]
            plans = {"tuned": session.plan, "greedy": session.greedy_plan(), **session.family_plans()}
            runners = {"onnxruntime": lambda: ort.run(None, feeds)}
            errors = {}
            for key, plan in plans.items():
                compiled = session.compile() if key == "tuned" else CompiledModel(graph, plan.choice, args.threads)
                errors[key] = relative_error(next(iter(compiled.run(feeds).values())), reference)
                runners[key] = (lambda c=compiled: c.run(feeds))
            alone = session.measure(runs=args.runs, inputs=feeds)   # back to back, as deployed
            families = [k for k in plans if k.startswith("cpu:")]
            screen = time_interleaved({k: runners[k] for k in ["onnxruntime", *families]}, args.screen_runs,
                                      args.warmup, args.pause, args.lead_in)
            screen_ms = {k: median_ms(v) for k, v in screen.items()}
            best_family = min(families, key=screen_ms.get)
            unlike = sum(plans["tuned"].choice[k] != plans[best_family].choice[k] for k in plans["tuned"].choice)
            # The same plan twice would measure only the noise between two runners: time it once.
            same_plan = unlike == 0
            timed = ["onnxruntime", "tuned", "greedy"] + ([] if same_plan else [best_family])
            # The noise floor of this run: the tuned plan compiled a second time (its own buffers)
            # and timed as one more runner; two runners of one plan differ only by noise.
            again = CompiledModel(graph, session.plan.choice, args.threads)
            runners["tuned again"] = lambda: again.run(feeds)
            timed.append("tuned again")
            samples = time_interleaved({k: runners[k] for k in timed}, args.runs, args.warmup, args.pause, args.lead_in)
            if same_plan:
                samples[best_family] = samples["tuned"]
            ms = {k: median_ms(v) for k, v in samples.items()}
            row = dict(model=name, layers=len(graph), tuning_empty_s=empty_s, tuning_warm_s=warm_s, search_s=search_s,
                       plan_method=session.plan.method, dp_states=session.plan.states,
                       ort_ms=ms["onnxruntime"], tuned_ms=ms["tuned"], tuned_iqr_ms=iqr_ms(samples["tuned"]),
                       greedy_ms=ms["greedy"], best_family=best_family, best_family_ms=ms[best_family],
                       predicted_ms=session.plan.cost * 1e3, greedy_predicted_ms=plans["greedy"].cost * 1e3,
                       best_family_predicted_ms=plans[best_family].cost * 1e3,
                       adapts=len(session.plan.adapts), rel_error=errors["tuned"],
                       screen_ms=screen_ms, all_predicted_ms={k: p.cost * 1e3 for k, p in plans.items()})
            row["tuned_vs_ort"] = row["tuned_ms"] / row["ort_ms"]
            row["tuned_vs_best_family"] = row["tuned_ms"] / row["best_family_ms"]
            # Paired: the median over rounds of the two runs' ratio within a round (the runners
            # take turns, so a round's two runs see the same machine), and how much the plans
            # differ at all: where they differ in a few layers, a ratio of medians near 1 is noise.
            row["tuned_vs_best_family_paired"] = paired_ratio(samples["tuned"], samples[best_family])
            row["tuned_vs_ort_paired"] = paired_ratio(samples["tuned"], samples["onnxruntime"])
            row["layers_unlike_best_family"] = unlike
            row["predicted_vs_best_family"] = plans["tuned"].cost / plans[best_family].cost
            row["noise_floor"] = ms["tuned again"] / ms["tuned"]
            row["noise_floor_paired"] = paired_ratio(samples["tuned again"], samples["tuned"])
            row["alone_ms"] = alone.median * 1e3
            row["predicted_vs_measured"] = row["predicted_ms"] / row["alone_ms"]
            results.append(row)
            print(f"{name}: tuned {row['tuned_ms']:.2f} ms (predicted {row['predicted_ms']:.2f}), ORT "
                  f"{row['ort_ms']:.2f}, best family {best_family} {row['best_family_ms']:.2f}, greedy "
                  f"{row['greedy_ms']:.2f}; tuning {empty_s:.1f} s empty / {warm_s:.2f} s warm", file=sys.stderr)
    (out / "tune.json").write_text(json.dumps({"machine": cpu_name(), "threads": args.threads, "runs": args.runs,
                                               "screen_runs": args.screen_runs, "results": results}, indent=1))
    lines = [f"# Tuning, batch 1, 224x224, {args.threads} threads, median of {args.runs} interleaved runs "
             f"(best family screened in {args.screen_runs})",
             f"machine: {cpu_name()}", "",
             "| model | tune s (empty db) | tune s (warm db) | search ms | method | predicted ms | measured alone ms "
             "| pred / meas | tuned ms | greedy ms | best family | family ms | ORT ms | tuned / ORT (paired) "
             "| tuned / family (paired; layers unlike, predicted) | tuned again / tuned (paired) | rel. error |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['model']} | {r['tuning_empty_s']:.1f} | {r['tuning_warm_s']:.2f} | {r['search_s'] * 1e3:.1f} "
                     f"| {r['plan_method']} | {r['predicted_ms']:.2f} | {r['alone_ms']:.2f} "
                     f"| {r['predicted_vs_measured']:.2f} | {r['tuned_ms']:.2f} | {r['greedy_ms']:.2f} | `{r['best_family']}` "
                     f"| {r['best_family_ms']:.2f} | {r['ort_ms']:.2f} | **{r['tuned_vs_ort']:.2f}** "
                     f"({r['tuned_vs_ort_paired']:.2f}) | {r['tuned_vs_best_family']:.3f} "
                     f"({r['tuned_vs_best_family_paired']:.3f}; {r['layers_unlike_best_family'] or 'same plan'}, "
                     f"{r['predicted_vs_best_family']:.3f}) | {r['noise_floor']:.3f} ({r['noise_floor_paired']:.3f}) "
                     f"| {r['rel_error']:.1e} |")
    (out / "tune.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
