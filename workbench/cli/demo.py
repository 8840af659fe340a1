"""The main job, end to end on a zoo model: import and fuse, profile (through the database),
select by DP, run and measure the tuned plan beside ONNX Runtime, export the tuned file, load
it back and check it.  ``workbench demo`` and ``scripts/dev.sh demo`` run this."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .. import zoo
from ..onnx_io.ort import compare_all, run_onnxruntime
from ..runtime.interpreter import random_inputs
from ..ui.report import format_table
from ..session import Session


def _ort_latency(model, feeds, threads, runs):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    for _ in range(3):
        sess.run(None, feeds)
    samples = []
    for _ in range(runs):
        time.sleep(0.03)   # let the previous runtime's spinning threads go idle
        t0 = time.perf_counter()
        sess.run(None, feeds)
        samples.append(time.perf_counter() - t0)
    return float(np.median(samples))


def run_demo(name="resnet50", batch=1, resolution=None, output=None, num_threads=None, db=None, runs=30,
             out=print):
    """Tune zoo model ``name`` and export it to ``output`` (default ``artifacts/<name>.tuned.onnx``).
    Returns ``{reference: {output: OutputCheck}}``: the loaded tuned file's outputs compared
    (:func:`workbench.onnx_io.ort.compare`) with ONNX Runtime on the original and on the tuned file."""
    kwargs = {"resolution": resolution} if resolution else {}
    model = zoo.build(name, batch=batch, **kwargs)
    session = Session.from_onnx(model, num_threads=num_threads, db=db)
    out(f"{name}: {len(session.graph)} layers after fusion, {session.num_threads} threads, "
        f"profile database {session.db.path}")
    t0 = time.perf_counter()
    plan = session.tune(progress=True)
    out(f"tuned in {time.perf_counter() - t0:.1f} s ({session.profiled.measured} measurements, "
        f"{session.profiled.reused} reused; selection by {plan.method} in {session.search_s * 1e3:.1f} ms)")
    rows = [dict(r, adapts=len(r["adapts"])) for r in session.layer_rows()]
    out("")
    out(format_table(rows, [("index", "#"), ("name", "layer"), ("op", "op"), ("routine", "routine"),
                            ("cost_ms", "ms"), ("runner_up", "runner-up"), ("runner_up_ms", "ms"),
                            ("adapts", "adapts in")]))
    greedy = session.greedy_plan()
    families = session.family_plans()
    best = min(families, key=lambda k: families[k].cost)
    feeds = random_inputs(session.graph)
    session.measure(runs=runs, inputs=feeds)
    ort_s = _ort_latency(model, feeds, session.num_threads, runs)
    out("")
    extra = session.overhead_s
    out(f"predicted {session.predicted_s * 1e3:.2f} ms (greedy {(greedy.cost + extra) * 1e3:.2f}, best single "
        f"family {best} {(families[best].cost + extra) * 1e3:.2f}); measured {session.measured.median * 1e3:.2f} ms; "
        f"ONNX Runtime {ort_s * 1e3:.2f} ms ({session.measured.median / ort_s:.2f}x)")
    path = Path(output or Path("artifacts") / f"{name}.tuned.onnx")
    path.parent.mkdir(parents=True, exist_ok=True)
    session.export(path)
    from .. import load
    loaded = load(path)
    ours = loaded.run(feeds)
    checks = {"the original": compare_all(ours, run_onnxruntime(model, feeds, threads=session.num_threads)),
              "the tuned file": compare_all(ours, run_onnxruntime(path, feeds, threads=session.num_threads))}
    out(f"exported {path} ({path.stat().st_size / 2**20:.1f} MiB); loaded back: same plan "
        f"{loaded.plan.choice == plan.choice}")
    for where, by_output in checks.items():
        for c in by_output.values():
            out(f"vs ONNX Runtime on {where}: " + c.summary())
            for line in c.details():
                out(line)
    return checks
