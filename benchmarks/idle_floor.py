"""What an idle pause costs on this machine by itself, with no inference engine in the picture.

    python benchmarks/idle_floor.py [--sizes-mb 0.5 1 2 4 8 16 32] [--idle-ms 50] [--repeats 15]
                                    [--models resnet50 ppocr_mobile_v2_cls ...] [--db PATH] [--out DIR]

For each working-set size, the first pass over an array of that size after ``--idle-ms`` of sleep
against the median of passes back to back (a NumPy sum: one thread streaming from memory), and
the same for a loop that touches only a few KiB (the CPU alone, its clock and the interpreter).
Where the streaming pass slows after the pause and the CPU-only loop does not, the pause costs
what refetching the working set from memory costs: the caches lost it meanwhile (other tenants
of a shared host, or the host itself), and a first inference after idle pays that floor for its
weights and buffers whatever the engine does.  ``--models`` adds each model's working set (its
tuned plan's buffers plus its weights) so that its row can be read against the table.
Writes DIR/idle_floor.md and DIR/idle_floor.json.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def first_after_idle(fn, idle_s, repeats):
    """(median seconds of the first call after ``idle_s`` of sleep, median of warm calls)."""
    idle, warm = [], []
    for _ in range(repeats):
        time.sleep(idle_s)
        t0 = time.perf_counter()
        fn()
        idle.append(time.perf_counter() - t0)
        for _ in range(3):
            fn()
        t0 = time.perf_counter()
        fn()
        warm.append(time.perf_counter() - t0)
    return float(np.median(idle)), float(np.median(warm))


def working_set_mb(name, threads, db):
    """A model's tuned plan: its buffers plus its weights, MiB."""
    import peers
    session, _, _ = peers._open(name, threads, db)
    model = session.compile()
    weights = sum(np.asarray(v).nbytes for layer in session.graph for v in layer.consts.values())
    return (model.memory.total_bytes + weights) / 2**20


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes-mb", type=float, nargs="+", default=[0.5, 1, 2, 4, 8, 16, 32])
    p.add_argument("--idle-ms", type=float, default=50.0)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--models", nargs="*", default=[])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--db", default=None, help="profile database for tuning --models")
    p.add_argument("--out", default="artifacts/benchmarks")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    small = np.ones(1024, np.float32)

    def cpu_only():
        for _ in range(200):
            small.sum()

    rows = []
    ci, cw = first_after_idle(cpu_only, args.idle_ms / 1e3, args.repeats)
    for mb in args.sizes_mb:
        a = np.ones(int(mb * 2**20) // 4, np.float32)
        si, sw = first_after_idle(a.sum, args.idle_ms / 1e3, args.repeats)
        rows.append({"size_mb": mb, "sweep_idle_ms": si * 1e3, "sweep_warm_ms": sw * 1e3, "sweep_ratio": si / sw})
        print(f"{mb:6.1f} MiB: sweep after idle {si * 1e3:.3f} ms, warm {sw * 1e3:.3f} ms, ratio {si / sw:.2f}")
    print(f"CPU only: after idle {ci * 1e3:.3f} ms, warm {cw * 1e3:.3f} ms, ratio {ci / cw:.2f}")
    models = {name: working_set_mb(name, args.threads, args.db) for name in args.models}
    lines = [f"# Idle floor: {args.idle_ms:g} ms of sleep, then one pass (medians of {args.repeats})", "",
             f"CPU only (a loop over 4 KiB): first after idle / warm = {ci / cw:.2f} "
             f"({ci * 1e3:.3f} / {cw * 1e3:.3f} ms).", "",
             "| working set MiB | sweep after idle ms | warm ms | idle / warm |", "|---|---|---|---|"]
    lines += [f"| {r['size_mb']:g} | {r['sweep_idle_ms']:.3f} | {r['sweep_warm_ms']:.3f} | {r['sweep_ratio']:.2f} |"
              for r in rows]
    if models:
        lines += ["", "| model | working set MiB (buffers + weights) |", "|---|---|"]
        lines += [f"| {name} | {mb:.1f} |" for name, mb in models.items()]
    (out / "idle_floor.md").write_text("\n".join(lines) + "\n")
    (out / "idle_floor.json").write_text(json.dumps({"idle_ms": args.idle_ms, "repeats": args.repeats,
                                                     "cpu_only": {"idle_ms": ci * 1e3, "warm_ms": cw * 1e3},
                                                     "sweeps": rows, "models_mb": models}, indent=1))
    print(f"wrote {out / 'idle_floor.md'}")


if __name__ == "__main__":
    main()
