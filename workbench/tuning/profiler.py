"""The profiler: time every applicable routine of every layer, and every adapt a plan of them may
need on every tensor (:func:`adapt_pairs`), on this machine and the model's real shapes, through
the profile database.

Identical layers (same :func:`~workbench.tuning.profiledb.signature`) are measured once; records already
in the database for this machine fingerprint are reused unless ``reprofile``.  The result is a
:class:`Profile`: plain numbers that :func:`problem` turns into the selection problem.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .. import routines
from ..ir.formats import QUANTIZED, Format
from ..ir.quant import QuantParams
from ..ir.graph import NCHW
from ..routines import adapts as adapts_mod
from ..runtime.compiled import default_threads
from ..runtime.interpreter import io_format_of
from .measure import Timing, time_routines
from .profiledb import ProfileDatabase, Record, signature
from .search import Candidate, Node, Problem

#: Seconds of samples each routine gets at least (more than ``repeats`` for short ones): ten
#: samples of an 18 us depthwise layer put its AVX2 and AVX-512 variants level, thirty put the
#: AVX-512 one 20% ahead, as the model runs them.
MIN_TIME = 0.002


@dataclass
class Profile:
    """``routine[layer][descriptor]`` and ``adapt[(tensor, src, dst)]``: :class:`Record` each."""

    routine: dict = field(default_factory=dict)
    adapt: dict = field(default_factory=dict)
    num_threads: int = 1
    measured: int = 0     # records measured now
    reused: int = 0       # records taken from the database
    shared: int = 0       # records of a layer or tensor identical to one measured in this run

    def merge(self, other):
        """Add ``other``'s records and counts (a later, partial profile) to this one."""
        for layer, recs in other.routine.items():
            self.routine.setdefault(layer, {}).update(recs)
        self.adapt.update(other.adapt)
        self.measured += other.measured
        self.reused += other.reused
        self.shared += other.shared
        return self


def _adapt_signature(spec, a):
    return f"{a.name}:{'x'.join(map(str, spec.shape))}:{spec.dtype}"


def _time_adapt(spec, a, repeats, threads):
    import time

    import numpy as np
    if a.is_view(spec):   # the executor runs nothing for it
        return Timing(samples=[0.0] * repeats)
    src_spec, dst_spec = spec.with_format(a.src), spec.with_format(a.dst)
    src = np.random.default_rng(0).standard_normal(adapts_mod.physical_shape(src_spec)).astype(src_spec.dtype)
    dst = np.empty(adapts_mod.physical_shape(dst_spec), dst_spec.dtype)
    # the time of a quantize does not depend on the scale: any will do where none is calibrated
    params = QuantParams((0.05,), (128,), QUANTIZED) if a.quantized else None
    a.run(src, dst, threads, params)
    t = Timing()
    for _ in range(repeats):
        t0 = time.perf_counter()
        a.run(src, dst, threads, params)
        t.samples.append(time.perf_counter() - t0)
    return t


def adapt_pairs(graph, io_format=NCHW, precisions=routines.FLOAT32_ONLY, allowed=None):
    """``{tensor: [(src, dst), ...]}``: the format pairs an adapt may have to convert each tensor
    between, in any plan of the default candidates in ``precisions`` (or of ``allowed``,
    ``{layer: [descriptor]}``, for the layers it names): every format its producer's candidates write
    it in (a graph input: its boundary format) to every other format one of its readers'
    candidates reads it in (a graph output: its boundary format)."""
    written, wanted = {}, {}
    for t, s in graph.inputs.items():
        written.setdefault(t, set()).add(io_format_of(s, io_format))
    for t in graph.outputs:
        if t not in graph.constants:
            wanted.setdefault(t, set()).add(io_format_of(graph.spec(t), io_format))
    for layer in graph:
        specs = graph.input_specs(layer)
        chosen = (candidates(graph, layer, precisions) if allowed is None or layer.name not in allowed else
                  [routines.get(layer.op, d) for d in allowed[layer.name]])
        for r in chosen:
            for t, fmt in zip(layer.outputs, r.output_formats(layer)):
                if t:
                    written.setdefault(t, set()).add(fmt)
            for i, (t, fmt) in enumerate(zip(layer.inputs, r.input_formats(layer, specs))):
                if t and i not in layer.consts:
                    wanted.setdefault(t, set()).add(fmt)
    pairs = {t: sorted((s, d) for s in srcs for d in wanted.get(t, ()) if s != d) for t, srcs in written.items()}
    return {t: p for t, p in pairs.items() if p}


def candidates(graph, layer, precisions=routines.FLOAT32_ONLY):
    """The routines tuning considers for ``layer`` by default: every applicable one computing in
    ``precisions`` but the NumPy reference (the correctness oracle, which allocates per run),
    unless nothing else applies."""
    found = routines.applicable(graph, layer, precisions)
    fast = [r for r in found if r.algo != "reference"]
    return fast or found


def profile(graph, db=None, num_threads=None, repeats=10, reprofile=False, progress=False, layers=None,
            wanted=None, adapts=True, io_format=NCHW, precisions=routines.FLOAT32_ONLY):
    """Measure ``graph``'s routines and adapts (see module docstring); returns a :class:`Profile`.

    ``wanted`` maps layer names to the descriptors to measure (default: :func:`candidates` of
    every layer); ``layers`` limits re-measurement (``reprofile``) to those layer names;
    ``adapts=False`` skips the adapts; those timed are the pairs of :func:`adapt_pairs` (a pair
    that only a chain of adapts converts is timed as the whole chain), for ``io_format`` at the
    graph's boundary, or ``adapts`` itself when it is such a ``{tensor: [(src, dst)]}`` mapping.
    """
    threads = int(num_threads or default_threads())
    db = db or ProfileDatabase(num_threads=threads)
    result = Profile(num_threads=threads)
    jobs = []
    for layer in graph:
        if wanted is not None and layer.name not in wanted:
            continue
        specs = graph.input_specs(layer)
        sig = signature(layer, specs)
        chosen = (candidates(graph, layer, precisions) if wanted is None else
                  [routines.get(layer.op, d) for d in wanted[layer.name]])
        for r in chosen:
            jobs.append(("routine", sig, r.descriptor, layer, r))
    if adapts is True:
        adapts = adapt_pairs(graph, io_format, precisions)
    for t, pairs in (adapts or {}).items():
        spec = graph.spec(t)
        for src, dst in pairs:
            try:
                hops = adapts_mod.path(spec.with_format(src), dst)
            except ValueError:
                continue   # nothing converts them: the selection never pairs these candidates
            a = hops[0] if len(hops) == 1 else adapts_mod.Chain(hops, spec)
            jobs.append(("adapt", _adapt_signature(spec, a), a.name, (t, spec), a))

    def stale(kind, what):   # to be measured again whatever the database holds
        return reprofile or (layers is not None and kind == "routine" and what.name in layers)

    bar = _progress(len(jobs), progress)
    # Routines: the database's records first; the others are timed a layer at a time, its
    # candidates in turns (so that the machine's drifts and bursts hit them alike), identical
    # layers (same signature) once.
    records, pending = {}, {}   # (signature, descriptor) -> Record; signature -> (layer, [routine])
    for kind, sig, name, what, impl in jobs:
        if kind != "routine" or (sig, name) in records:
            continue
        rec = records[(sig, name)] = None if stale(kind, what) else db.get(kind, sig, name)
        if rec is None:
            pending.setdefault(sig, (what, []))[1].append(impl)
        else:
            result.reused += 1
    timed = set()
    for sig, (layer, chosen) in pending.items():
        for r, t in zip(chosen, time_routines(graph, layer, chosen, repeats=repeats, num_threads=threads,
                                              min_time=MIN_TIME)):
            rec = records[(sig, r.descriptor)] = Record("routine", sig, r.descriptor, t.median, t.spread,
                                                         t.samples, t.prepare_s)
            db.put([rec])
            timed.add((sig, r.descriptor))
            result.measured += 1
            bar.update(1)
    seen = set()
    for kind, sig, name, what, impl in jobs:
        first = (kind, sig, name) not in seen
        seen.add((kind, sig, name))
        if kind == "routine":
            result.routine.setdefault(what.name, {})[name] = records[(sig, name)]
            result.shared += not first   # an identical layer met earlier in this run
            if first and (sig, name) in timed:
                continue   # on the bar already
        else:
            rec = records.get((kind, sig, name))
            if rec is not None:
                result.shared += 1
            else:
                rec = None if stale(kind, what) else db.get(kind, sig, name)
                if rec is not None:
                    result.reused += 1
                else:
                    t = _time_adapt(what[1], impl, repeats, threads)
                    rec = Record(kind, sig, name, t.median, t.spread, t.samples, t.prepare_s)
                    db.put([rec])
                    result.measured += 1
                records[(kind, sig, name)] = rec
            result.adapt[(what[0], impl.src, impl.dst)] = rec
        bar.update(1)
    bar.close()
    return result


def _progress(total, enabled):
    if enabled:
        try:
            from tqdm.auto import tqdm
            return tqdm(total=total, desc="profiling", unit="job")
        except ImportError:  # pragma: no cover - tqdm is a dependency
            pass

    class _Null:
        def update(self, n):
            pass

        def close(self):
            pass
    return _Null()


def problem(graph, costs, adapt_costs, allowed=None, io_format=NCHW):
    """The selection :class:`~workbench.tuning.search.Problem` of ``graph``.

    ``costs[layer][descriptor]`` (seconds), ``adapt_costs[(tensor, src, dst)]``; ``allowed`` maps
    a layer to the descriptors it may use (filters and pins), default every costed one.
    """
    nodes = []
    for layer in graph:
        specs = graph.input_specs(layer)
        acts = [(i, t) for i, t in enumerate(layer.inputs) if t and i not in layer.consts]
        cands = []
        for descriptor, cost in sorted(costs[layer.name].items()):
            if allowed is not None and descriptor not in allowed.get(layer.name, ()):
                continue
            r = routines.get(layer.op, descriptor)
            formats = r.input_formats(layer, specs)
            out = r.output_formats(layer)
            cands.append(Candidate(descriptor, float(cost), tuple(formats[i] for i, _ in acts),
                                   out[0] if out else Format("float32", NCHW)))
        nodes.append(Node(layer.name, tuple(t for _, t in acts), tuple(t for t in layer.outputs if t), tuple(cands)))
    return Problem(nodes, dict(adapt_costs), {t: io_format_of(s, io_format) for t, s in graph.inputs.items()},
                   {t: io_format_of(graph.spec(t), io_format) for t in graph.outputs if t not in graph.constants})
