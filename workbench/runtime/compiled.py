"""The planned executor: a model compiled for one assignment of routines to layers.

Compilation resolves the format of every tensor (the layout its producer's routine writes),
inserts adapt steps where a reader wants another layout (one adapt per tensor and target
format, shared by all readers), runs every routine's ``prepare`` once, and plans all buffers
ahead (:mod:`workbench.runtime.memory`), the routines' declared workspaces among them.
:meth:`CompiledModel.run` is then a walk over bound steps with no allocation but the returned
outputs.

Concurrent callers: the arena (workspaces included) and the routines' prepared state belong
to one *executor*; a model keeps a pool of them, creates one when a caller finds none idle (up to
``max_concurrency``, beyond which callers wait), and reuses them, so every thread gets its own
buffers and a single-threaded caller only ever uses the first.
"""
from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager, nullcontext

import numpy as np

from ..routines import adapts as adapt
from .. import routines
from .blas import SerialBlas
from .denormals import flushed
from .executor import Step, _Executor  # noqa: F401  (Step: what callers read off .steps)
from ..errors import WorkbenchError, where
from .in_place import in_place, root
from .interpreter import FeedCheck, copy_out, io_format_of
from .governor import IDLE_GAP_S, ThreadGovernor
from ..ir.formats import Format
from ..ir.graph import NCHW, NHWC
from .memory import Value, plan_memory
from .pinning import caller_pinned
from ..routines.tensor_ops import NHWC_AXIS
from .slices import plan_slices, reshaped


#: The key of the buffer the routines' workspaces share in the memory plan.
WORKSPACE = ("workspace", Format("uint8", "workspace"))


def default_threads():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


class CompiledModel:
    """A graph compiled for an assignment ``{layer name: routine descriptor}``.

    Parameters
    ----------
    graph : Graph
    assignment : dict[str, str]
        Routine descriptor per layer; every layer must be assigned.
    num_threads : int, optional
        Threads for the kernels' pool and BLAS alike (default: the CPUs this process may use).
    io_format : str
        Layout of 4-D float inputs and outputs at the model's boundary: ``"nchw"`` (default) or
        ``"nhwc"`` (arrays given and returned as (N, H, W, C)).
    max_concurrency : int, optional
        Most runs in progress at once.  :meth:`run` may be called from several threads: each
        concurrent caller gets an executor of its own (an arena and prepared weights, created on
        first need and kept for reuse); callers beyond this many wait for one to come free.  The
        default, CPUs // ``num_threads``, keeps concurrent runs from oversubscribing the cores: on 2
        cores with 2 threads, calls are serialised (the kernels' pool serves one caller at a
        time; a concurrent one runs its chunks on its own thread alone).
    adaptive_threads : bool
        Let a :class:`~workbench.runtime.governor.ThreadGovernor` run with one thread fewer while the
        run times say another process holds a core (default False: the pool's workers answer a
        busy core themselves, ``kernels_pyx/wb_pool.h``, and did better without it; :meth:`run`
        only, never :meth:`run_timed`).
    flush_denormals : bool
        Flush denormal floats to zero while the model runs (default True; see
        :mod:`workbench.runtime.denormals`): the profiler times routines that way too.
    """

    def __init__(self, graph, assignment, num_threads=None, io_format=NCHW, max_concurrency=None,
                 adaptive_threads=False, flush_denormals=True):
        self.graph = graph
        self.flush_denormals = bool(flush_denormals)
        self.num_threads = int(num_threads or default_threads())
        self.governor = ThreadGovernor(self.num_threads) if adaptive_threads and self.num_threads > 1 else None
        self._last_end = float("-inf")   # when the last run ended (the governor's after-idle test)
        self.max_concurrency = int(max_concurrency or max(1, default_threads() // self.num_threads))
        if self.max_concurrency < 1:
            raise WorkbenchError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.io_format = io_format
        self.assignment = dict(assignment)
        self.routines = {}
        for layer in graph:
            if layer.name not in self.assignment:
                raise WorkbenchError(f"{where(layer)} has no routine assigned")
            r = routines.get(layer.op, self.assignment[layer.name])
            if not r.applies(layer, graph.input_specs(layer)):
                raise WorkbenchError(f"{where(layer)}: routine {r.descriptor} does not apply to it")
            self.routines[layer.name] = r
        # Checked per run: limiting the BLAS and validating feeds through the general path cost
        # a small model's run a tenth of its time, and a run after idle more.
        self._uses_blas = any(r.uses_blas for r in self.routines.values())
        self._inputs = FeedCheck(graph, io_format)
        self._build()

    # -- compilation -----------------------------------------------------------------------
    def _build(self):
        g = self.graph
        home = {t: io_format_of(s, self.io_format) for t, s in g.inputs.items()}
        ready = {(t, fmt) for t, fmt in home.items()}
        plan = []   # (kind, payload, input keys, output keys)
        alias = {}   # key -> the key whose buffer it shares (view routines and adapts, in place)

        def need(tensor, fmt):
            key = (tensor, fmt)
            if key not in ready:
                cur = (tensor, home[tensor])
                for a in adapt.path(g.spec(tensor).with_format(home[tensor]), fmt):
                    nxt = (tensor, a.dst)
                    if nxt not in ready:
                        if a.is_view(g.spec(tensor)):
                            alias[nxt] = alias.get(cur, cur)
                        else:
                            plan.append(("adapt", a, [cur], [nxt]))
                        ready.add(nxt)
                    cur = nxt
            return key

        for layer in g:
            r = self.routines[layer.name]
            formats = r.input_formats(layer, g.input_specs(layer))
            in_keys = [None if (i in layer.consts or not t) else need(t, formats[i]) for i, t in enumerate(layer.inputs)]
            out_keys = []
            for j, (t, fmt) in enumerate(zip(layer.outputs, r.output_formats(layer))):
                t = t or f"{layer.name}:unused{j}"
                home[t] = fmt
                ready.add((t, fmt))
                out_keys.append((t, fmt))
            if r.view_of_input is not None:
                base = in_keys[r.view_of_input]
                alias[out_keys[0]] = alias.get(base, base)
            plan.append(("layer", layer, in_keys, out_keys))
        self.output_keys = {o: need(o, io_format_of(g.spec(o), self.io_format)) for o in g.outputs if o not in g.constants}
        self.input_keys = {t: (t, fmt) for t, fmt in home.items()}
        self.in_place = in_place(plan, alias, self.routines, self._spec,
                                 {key for t, key in self.input_keys.items() if t in g.inputs},
                                 set(self.output_keys.values()))
        protected = {k for t, k in self.input_keys.items() if t in g.inputs} | set(self.output_keys.values())
        overwritten = {outs[0] for kind, layer, _, outs in plan if kind == "layer" and layer.name in self.in_place}
        self.slices = plan_slices(plan, alias, self.routines, lambda k: adapt.physical_shape(self._spec(k)),
                                  self._physical_axis, protected, reshapes=set(alias) - overwritten,
                                  inputs={k for t, k in self.input_keys.items() if t in g.inputs})
        self._chain = dict(alias)   # each view's own base, for building the views in order
        self._chain.update({k: s.base for k, s in self.slices.items()})
        alias = {k: root(self._chain, k) for k in self._chain}
        # Graph inputs read only by adapts: the adapts read the caller's array itself (no copy
        # into a buffer of ours first, which also left it all in the loading core's cache).
        readers = {}
        for kind, _, ins, _ in plan:
            for k in ins:
                if k is not None:
                    readers.setdefault(k, set()).add(kind)
        self._direct = {t for t, k in self.input_keys.items() if t in g.inputs and readers.get(k) == {"adapt"}
                        and k not in alias.values() and k not in self.output_keys.values()}

        def owner(key):
            return alias.get(key, key)

        values = {}
        for key in ready:
            if key not in alias:
                spec = self._spec(key)
                values[key] = Value(key, adapt.physical_shape(spec), spec.dtype, first=None, last=-1)
        for step, (_, _, ins, outs) in enumerate(plan):
            for k in outs:   # a buffer holding slices is live from the first slice written
                v = values[owner(k)]
                v.first = step if v.first is None else min(v.first, step)
            for k in ins + outs:   # a view's base stays alive while the view is written or read
                if k is not None:
                    values[owner(k)].last = max(values[owner(k)].last, step)
        for k in self.output_keys.values():
            values[owner(k)].last = len(plan)
        for t in g.inputs:   # loaded before the first step, whichever step first cuts a view of it
            values[owner(self.input_keys[t])].first = -1
        for v in values.values():
            v.first = -1 if v.first is None else v.first
            v.last = max(v.last, v.first)
        # The routines' declared workspaces: steps run one at a time, so they all share one
        # buffer the size of the largest, live through the whole run, in a slot after the
        # tensors' (whose placement it leaves as it was).
        self.workspaces = {}
        for kind, layer, _, _ in plan:
            if kind == "layer":
                r = self.routines[layer.name]
                try:
                    need = r.workspace(layer, g.input_specs(layer), self.num_threads)
                except Exception as e:
                    raise WorkbenchError(f"{where(layer)} with routine {r.descriptor}: workspace failed: {e}") from e
                if need:
                    self.workspaces[layer.name] = int(need)
        resident = [Value(WORKSPACE, (max(self.workspaces.values()),), "uint8", first=-1, last=len(plan))
                    ] if self.workspaces else []
        self.memory = plan_memory(values.values(), resident)
        self._plan = plan
        self._pool_lock = threading.Lock()
        self._free = threading.BoundedSemaphore(self.max_concurrency)
        self._idle, self._executors = [], 0
        first = self._new_executor()
        self._idle.append(first)
        # The first executor's buffers and steps, as a single-threaded caller uses them.
        self._arenas, self._views, self.steps, self._fed = first.arenas, first.views, first.steps, first.fed

    def _new_executor(self):
        """An arena and the plan's steps bound to it; ``prepare`` runs again for each, because
        a routine's state holds its workspace in this arena."""
        arenas, views = self.memory.allocate()

        def view(key):
            if key not in views:
                base = view(self._chain[key])
                try:
                    views[key] = (self.slices[key].of(base) if key in self.slices
                                  else reshaped(base, adapt.physical_shape(self._spec(key))))
                except ValueError as e:   # plan_slices leaves alone what cannot be seen so
                    raise WorkbenchError(f"internal: {key} as a view of {self._chain[key]}: {e}") from e
            return views[key]

        for key in self._chain:
            view(key)
        ex = _Executor(arenas, views, threads=self.num_threads)
        ex.steps = [self._bind(ex, *p) for p in self._plan]
        with self._pool_lock:
            self._executors += 1
        return ex

    @contextmanager
    def _executor(self):
        """An idle executor (a new one if none is idle), back in the pool afterwards."""
        self._free.acquire()
        try:
            with self._pool_lock:
                ex = self._idle.pop() if self._idle else None
            if ex is None:
                ex = self._new_executor()
            try:
                yield ex
            finally:
                ex.fed.clear()   # the caller's arrays are not kept past the run
                with self._pool_lock:
                    self._idle.append(ex)
        finally:
            self._free.release()

    @property
    def executors(self):
        """How many executors (arenas) this model has created so far."""
        return self._executors

    def _physical_axis(self, layer, key):
        """The physical axis of ``key``'s array along which Concat/Split ``layer`` works."""
        rank = len(self._spec(key).shape)
        axis = layer.attrs["axis"] % rank
        return NHWC_AXIS[axis] if key[1].layout == NHWC and rank == 4 else axis

    def _spec(self, key):
        tensor, fmt = key
        if ":unused" in tensor:
            layer = self.graph.layer(tensor.split(":unused")[0])
            return layer.out_specs[int(tensor.split(":unused")[1])].with_format(fmt)
        return self.graph.spec(tensor).with_format(fmt)

    def _bind(self, ex, kind, payload, in_keys, out_keys):
        views = ex.views
        if kind == "adapt":
            src, dst = views[in_keys[0]], views[out_keys[0]]
            a, t, fed = payload, in_keys[0][0], ex.fed
            params = self.graph.quant.require(t, f"adapt {a.name}") if a.quantized else None
            run = ((lambda: a.run(fed[t], dst, ex.threads, params)) if t in self._direct and in_keys[0] == self.input_keys[t]
                   else (lambda: a.run(src, dst, ex.threads, params)))
            return Step("adapt", adapt.step_name(t, a), a.name, run)
        layer, r = payload, self.routines[payload.name]
        if r.view_of_input is not None:
            return Step("layer", layer.name, r.descriptor, lambda: None, layer)
        try:
            state = routines.prepared(r, layer, self.graph.input_specs(layer), self.num_threads,
                                      views[WORKSPACE][:self.workspaces[layer.name]] if layer.name in self.workspaces
                                      else None, quant=self.graph.quant)
        except WorkbenchError:
            raise
        except Exception as e:
            raise WorkbenchError(f"{where(layer)} with routine {r.descriptor}: prepare failed: {e}") from e
        args = [layer.consts[i] if i in layer.consts else (views[k] if k is not None else None)
                for i, k in enumerate(in_keys)]
        outs = [views[k] for k in out_keys]
        try:
            call = r.bind(layer, state, args, outs)
        except WorkbenchError:
            raise
        except Exception as e:
            raise WorkbenchError(f"{where(layer)} with routine {r.descriptor}: bind failed: {e}") from e
        if call is not None:   # checked once: each run goes straight to the kernel
            return Step("layer", layer.name, r.descriptor, lambda: call(ex.threads), layer)
        return Step("layer", layer.name, r.descriptor, lambda: r.run(layer, state, args, outs, ex.threads), layer)

    # -- running ---------------------------------------------------------------------------
    def _blas(self):
        return SerialBlas() if self._uses_blas else nullcontext()

    def run(self, feeds):
        """Run the model; returns ``{output name: array}`` (copies, safe to keep).  Safe to call
        from several threads at once (see ``max_concurrency``)."""
        arrays = self._inputs(feeds)
        gov = self.governor
        threads = gov.choose() if gov is not None else self.num_threads
        with self._executor() as ex:
            # The governor's time includes moving onto the caller's CPU: under load that wait is
            # where a run with all threads loses most (a single-threaded run is not pinned).
            t0 = time.perf_counter()
            after_idle = t0 - self._last_end > IDLE_GAP_S
            with self._blas(), caller_pinned(threads), flushed(self.flush_denormals):
                ex.threads = threads
                self._load(ex, arrays)
                for step in ex.steps:
                    step.run()
                out = self._outputs(ex)
            self._last_end = end = time.perf_counter()
            if gov is not None:
                gov.record(threads, end - t0, after_idle)
            return out

    def run_into(self, arrays, outs, threads):
        """Run as one step of another model (an If's branch): ``arrays`` ``{input: array}`` of the
        graph's input shapes and types, unchecked, and the outputs copied into ``outs`` (in the
        graph's output order; None skips one).  The caller's run holds the thread pinning, the
        denormal flushing and the BLAS limit already."""
        with self._executor() as ex:
            ex.threads = threads
            self._load(ex, arrays)
            for step in ex.steps:
                step.run()
            for name, dst in zip(self.graph.outputs, outs):
                if dst is not None:
                    np.copyto(dst, self.graph.constants[name] if name in self.graph.constants
                              else ex.views[self.output_keys[name]])

    def _load(self, ex, arrays):
        for name, a in arrays.items():
            if name in self._direct:
                ex.fed[name] = np.ascontiguousarray(a)
            else:
                np.copyto(ex.views[self.input_keys[name]], a)

    def _outputs(self, ex):
        return {o: (self.graph.constants[o].copy() if o in self.graph.constants
                    else copy_out(ex.views[self.output_keys[o]], ex.threads))
                for o in self.graph.outputs}

    def run_timed(self, feeds):
        """Run once, timing every step: ``(outputs, [(step, start s, duration s), ...])`` with
        start times from the beginning of the run (for traces and per-layer tables).  The steps
        are those of the executor that ran, in :attr:`steps`' order."""
        arrays = self._inputs(feeds)
        times = []
        with self._executor() as ex, self._blas(), caller_pinned(self.num_threads), flushed(self.flush_denormals):
            ex.threads = self.num_threads
            self._load(ex, arrays)
            origin = time.perf_counter()
            for step in ex.steps:
                t0 = time.perf_counter()
                step.run()
                times.append((step, t0 - origin, time.perf_counter() - t0))
            return self._outputs(ex), times

    @property
    def adapts(self):
        return [s for s in self.steps if s.kind == "adapt"]

    def __repr__(self):
        return (f"CompiledModel({self.graph.name!r}, {len(self.steps)} steps, {len(self.adapts)} adapts, "
                f"{self.memory.total_bytes / 2**20:.1f} MiB in {len(self.memory.slot_sizes)} buffers "
                f"x {self._executors} executor(s), {self.num_threads} threads)")
