"""The tuning session: one model on this machine, from import to a tuned, exported file.

>>> s = Session.from_onnx("resnet50.onnx")
>>> s.tune()                       # profile (through the database), then select by DP
>>> s.pin("layer4.1.conv2", "cpu:float32:nchw/winograd2").retune()
>>> s.run({"input": x}); s.measure(); s.export("resnet50.tuned.onnx")

Everything the notebook widgets show is an attribute or a method result of a :class:`Session`;
it works the same without Jupyter.  Profiling goes through :mod:`workbench.tuning.profiler` (and its
database), selection through :mod:`workbench.tuning.search` (pure), execution through
:class:`~workbench.runtime.compiled.CompiledModel`.
"""
from __future__ import annotations

import threading
import time

import numpy as np

from . import routines
from .errors import PinError, WorkbenchError, where
from .ir.formats import parse_precisions
from .ir.graph import NCHW, NHWC
from .ir.quant import QuantError
from .runtime.compiled import CompiledModel, default_threads
from .session_comparisons import SessionComparisons
from .session_precision import SessionPrecision
from .session_rows import SessionRows
from .session_shapes import SessionShapes
from .session_files import NotTunedError, SessionFiles
from .tuning import filters as assign_mod
from .tuning import search
from .tuning.branches import runtime_ifs, tune_branches
from .tuning.profiler import adapt_pairs
from .tuning.profiler import problem as make_problem
from .tuning.profiler import profile as run_profile


def _precisions(values):
    try:
        return parse_precisions(values)
    except ValueError as e:
        raise WorkbenchError(str(e)) from None


class Session(SessionFiles, SessionComparisons, SessionPrecision, SessionRows, SessionShapes):
    """A model being tuned.

    Parameters
    ----------
    graph : Graph
        The imported, fused model.
    num_threads : int, optional
        Threads for kernels and BLAS alike, in profiling and running (default: this process's CPUs).
    db : ProfileDatabase, str or Path, optional
        The profile database (default: :func:`workbench.tuning.profiledb.default_path`).
    io_format : str
        Layout of the graph's inputs and outputs (``"nchw"`` or ``"nhwc"``).
    max_concurrency : int, optional
        Most :meth:`run` calls in progress at once (default: CPUs // ``num_threads``, so that
        concurrent calls do not oversubscribe the cores; 1, i.e. serialised calls, when the
        kernels' threads take every CPU).  :meth:`run` is thread-safe: each concurrent caller runs
        on an executor of its own (its own buffers and prepared weights, created when first
        needed and then reused); beyond ``max_concurrency`` callers wait their turn.  Tuning,
        pinning and retuning are not thread-safe; do them from one thread.
    flush_denormals : bool
        Flush denormal floats to zero while the model runs (default True, as OpenVINO does; see
        :mod:`workbench.runtime.denormals`).  Profiling always flushes them.
    """

    def __init__(self, graph, num_threads=None, db=None, io_format=NCHW, max_concurrency=None, flush_denormals=True):
        if io_format not in (NCHW, NHWC):
            raise WorkbenchError(f"io_format must be {NCHW!r} or {NHWC!r}, got {io_format!r}")
        self.graph = graph
        self.num_threads = int(num_threads or default_threads())
        self.io_format = io_format
        self.max_concurrency = max_concurrency
        self.flush_denormals = bool(flush_denormals)
        self._db = db
        self.profiled = None        # Profile
        self.filters = []           # filter strings
        self.pins = {}              # layer name -> descriptor
        self.precision_pins = {}    # layer name -> the data type it must compute in (pin_precision)
        self.precisions = routines.FLOAT32_ONLY   # data types tuning may choose routines of
        self.max_error = None       # error budget against float32 (tuning.budget), None: none
        self.min_cosine = None      # cosine budget against float32 (tuning.budget), None: none
        self.demoted = set()        # layers the error budget keeps in float32
        self.budget = None          # budget.BudgetReport of the last fit
        self.plan = None            # search.Plan
        self.fallbacks = []
        self.family_notes = {}      # family filter -> its fallbacks, or why family_plans left it out
        self.search_s = None        # seconds the last selection took
        self.profile_s = None       # seconds the last profile() took
        self.measured = None        # measure.Latency of the whole tuned model
        self.comparison = None      # compare.Comparison of the plan against the others
        self.precision = None       # precision.PrecisionError of the plan against float32
        self.calibration = None     # what the bias correction's means were calibrated on (calibrate_means)
        self.quant_calibration = None   # what the qint8 ranges were calibrated on (calibrate)
        self.calibration_inputs = None  # the feeds calibrate() was given (error budgets are checked on them)
        self.sensitivities = {}     # layer -> PrecisionError with only it below float32 (sensitivity())
        self.tuned_on = None        # fingerprint facts of the machine a loaded file was tuned on
        self.tuned_metadata = None  # model metadata of a loaded tuned file
        self.loaded_costs = None    # {layer: {descriptor: s}} a loaded tuned file was tuned with
        self.context = None         # calibrate.Context: in-context costs of the routines plans used
        self._compiled = None
        self._compile_lock = threading.Lock()

    @classmethod
    def from_onnx(cls, source, num_threads=None, db=None, batch=None, resolution=None, shapes=None, io_format=NCHW,
                  fuse=True, constants=None, **options):
        """Import ``source`` (path, bytes or ModelProto), with the fusion passes unless ``fuse``
        is False (every ONNX node its own layer, constants still folded); ``constants``: values of
        inputs fixed for this use; see :func:`workbench.load`.
        ``options`` go to the constructor (``max_concurrency``, ``flush_denormals``)."""
        from .onnx_io.read import import_onnx
        from .ir.passes import optimize
        graph = import_onnx(source, batch=batch, resolution=resolution, shapes=shapes, constants=constants)
        if fuse:
            optimize(graph)
        session = cls(graph, num_threads=num_threads, db=db, io_format=io_format, **options)
        session._remember_source(source, constants=constants, fuse=fuse)   # other input shapes import it again
        return session

    # -- the pieces --------------------------------------------------------------------------
    @property
    def db(self):
        from .tuning.profiledb import ProfileDatabase
        if not isinstance(self._db, ProfileDatabase):
            self._db = ProfileDatabase(path=self._db, num_threads=self.num_threads)
        return self._db

    def layer(self, key):
        """A layer by name, or by index as ``workbench info`` prints it (int or digit string)."""
        layers = list(self.graph)
        if isinstance(key, (int, np.integer)) or (isinstance(key, str) and key.isdigit()):
            i = int(key)
            if not 0 <= i < len(layers):
                raise PinError(f"no layer {i}: the model has layers 0..{len(layers) - 1}")
            return layers[i]
        try:
            return self.graph.layer(key)
        except KeyError:
            raise PinError(f"no layer named {key!r} in {self.graph.name!r}") from None

    # -- profiling and selection -------------------------------------------------------------
    def profile(self, reprofile=False, progress=False, repeats=10, layers=None):
        """Measure every applicable routine of every layer and every adapt (database first).

        ``reprofile`` measures again instead of reusing records; ``layers`` (names or indices)
        limits the re-measurement to those layers.  Returns the :class:`~workbench.tuning.profiler.Profile`.
        """
        names = None if layers is None else {self.layer(k).name for k in layers}
        t0 = time.perf_counter()
        self.profiled = run_profile(self.graph, db=self.db, num_threads=self.num_threads, repeats=repeats,
                                    reprofile=reprofile and names is None, progress=progress, layers=names,
                                    io_format=self.io_format, precisions=self.precisions)
        self.profile_s = time.perf_counter() - t0
        if self.context is not None and (reprofile or names):
            # Measured again: the in-context costs of those layers are as stale as their records.
            ctx = self.context
            ctx.routine = {k: v for k, v in ctx.routine.items() if names is not None and k[0] not in names}
            ctx.ratio = {k: v for k, v in ctx.ratio.items() if names is not None and k not in names}
            if names is None:
                ctx.adapt = {}
        return self.profiled

    def costs(self, in_context=True):
        """``(routine costs {layer: {descriptor: s}}, adapt costs {(tensor, src, dst): s})``: the
        profile's, with the in-context ones of :meth:`calibrate` in their place unless
        ``in_context`` is False."""
        if self.profiled is None:
            raise NotTunedError("not profiled yet: call profile() or tune() first")
        costs = ({l: {d: r.median for d, r in recs.items()} for l, recs in self.profiled.routine.items()},
                 {k: r.median for k, r in self.profiled.adapt.items()})
        if in_context and self.context is not None:
            from .tuning.in_context import overlay
            costs = overlay(*costs, self.context)
        return costs

    def problem(self, allowed=None):
        costs, adapt_costs = self.costs()
        return make_problem(self.graph, costs, adapt_costs, allowed, self.io_format)

    def tune(self, filters=None, pins=None, progress=False, in_context=False, precisions=None, max_error=None,
             error_inputs=None, calibration_inputs=None, min_cosine=None, context_inputs=None):
        """Profile (what the database lacks) and select the fastest plan; returns the :class:`~workbench.tuning.search.Plan`.

        ``filters``: routine filter strings (see :mod:`workbench.tuning.filters`); ``pins``:
        ``{layer: descriptor}``.  Both replace the session's current ones when given.
        ``precisions``: the data types the plan may compute in besides float32 (``["bfloat16"]``;
        float32 is always allowed, for the layers no other routine serves); they replace the
        session's when given.  Lower precisions change the outputs: :meth:`precision_error`
        measures by how much.
        ``max_error``: an error budget, the largest difference from float32 over the output's
        peak (``PrecisionError.max_rel``) the plan may have on ``error_inputs`` (feeds; default
        the inputs given to :meth:`calibrate`, else three seeded random ones): the layers where a
        lower precision buys the least time for its error stay float32 until the plan is within
        it (:mod:`workbench.tuning.budget`; the report is kept as :attr:`budget`).  It replaces
        the session's budget when given; ``session.max_error = None`` drops it.  ``min_cosine``:
        the same for the lowest cosine similarity of an output with float32's (both may be set;
        the plan keeps to both).
        ``calibration_inputs``: feeds the bias correction of bfloat16 routines is calibrated on
        (:meth:`calibrate_means`; without them, the first tuning that allows bfloat16 draws
        seeded random ones), and with qint8 allowed the quantization ranges too
        (:meth:`calibrate`, which qint8 needs before it is tuned).
        ``in_context``: then time the plan inside the model and select again on those times
        (:meth:`time_in_context`), so that the prediction is what a run costs.  Off by default: the
        selection is then a function of the profile database alone (the same plan from the
        same records, and no model runs when the database has them all).  ``context_inputs``: the
        feeds it is timed on (default seeded random ones; a model whose If runs on an input's
        value needs that value).
        """
        if precisions is not None:
            precisions = _precisions(precisions)
            if precisions != self.precisions:
                self.precisions = precisions
                self.profiled = None   # the new data types' routines and casts (the database keeps the rest)
        if filters is not None:
            filters = list(filters)
            assign_mod.allowed(self.graph, filters, self.precisions)   # validate (syntax, explicit selections) before anything runs
            self.filters = filters
        if pins is not None:
            old, self.pins = self.pins, {}
            try:
                for layer, descriptor in dict(pins).items():
                    self.pin(layer, descriptor)
            except WorkbenchError:
                self.pins = old
                raise
        if max_error is not None or min_cosine is not None:
            from .tuning.budget import Budget
            budget = Budget(max_error, min_cosine)   # checked before anything runs
            self.max_error = budget.max_error if max_error is not None else self.max_error
            self.min_cosine = budget.min_cosine if min_cosine is not None else self.min_cosine
        quantized = "qint8" in self.precisions
        if quantized and calibration_inputs is not None:
            self.calibrate(calibration_inputs)   # the ranges, and the means too
        elif quantized and not len(self.graph.quant):
            raise QuantError("qint8 needs calibration data: call calibrate(inputs) first (workbench tune "
                             "--calibration DIR), or calibrate(synthetic=True) to time qint8 on random inputs, "
                             "whose ranges say nothing of real data")
        elif self.precisions != routines.FLOAT32_ONLY and (calibration_inputs is not None or self.calibration is None):
            self.calibrate_means(calibration_inputs)
        if runtime_ifs(self.graph):   # first: the If is profiled running its branches' plans
            tune_branches(self, in_context=in_context)
            self.profiled = None
        if self.profiled is None:
            self.profile(progress=progress)
        self.demoted, self.budget = set(), None
        self.retune()
        if error_inputs is None:
            error_inputs = self.calibration_inputs   # the budget holds on the data calibrated on
        if (self.max_error is not None or self.min_cosine is not None) and self.low_precision:
            self._fit_budget(error_inputs)
        if in_context:
            fitted = dict(self.plan.choice)
            self.time_in_context(inputs=context_inputs)
            if self.budget is not None and dict(self.plan.choice) != fitted:
                self._fit_budget(error_inputs)   # in-context costs moved the plan: its error anew
        return self.plan

    def time_in_context(self, rounds=3, runs=5, inputs=None):
        """Time the plan's routines and adapts inside the model and select again on those times
        (see :mod:`workbench.tuning.in_context`); returns the :class:`~workbench.tuning.in_context.Context`."""
        from .tuning.in_context import calibrate
        self._need_plan()
        return calibrate(self, inputs, rounds=rounds, runs=runs)

    def allowed(self):
        """``{layer: [descriptor, ...]}`` under the current filters and pins."""
        allowed, self.fallbacks = assign_mod.allowed(self.graph, self.filters, self.precisions)
        for layer in self.demoted:
            allowed[layer] = [d for d in allowed[layer] if d.split(":")[1] == "float32"] or allowed[layer]
        for layer, dtype in self.precision_pins.items():
            allowed[layer] = self._precision_routines(layer, dtype)
        for layer, descriptor in self.pins.items():
            allowed[layer] = [descriptor]
        return allowed

    def _ensure_profiled(self, wanted):
        """Measure (or fetch from the database) the records of ``{layer: [descriptor]}`` that the
        profile lacks: a filter or pin may name a routine the default profile leaves out (the
        reference)."""
        have = self.profiled.routine
        missing = {layer: [d for d in ds if d not in have.get(layer, {})] for layer, ds in wanted.items()}
        missing = {layer: ds for layer, ds in missing.items() if ds}
        # ... and the adapts they need: a pinned bfloat16 routine's casts, say, which a float32
        # profile never timed.
        pairs = {t: [p for p in ps if (t, *p) not in self.profiled.adapt]
                 for t, ps in adapt_pairs(self.graph, self.io_format, allowed=wanted).items()}
        pairs = {t: ps for t, ps in pairs.items() if ps}
        if missing or pairs:
            self.profiled.merge(run_profile(self.graph, db=self.db, num_threads=self.num_threads,
                                            wanted=missing, adapts=pairs))

    def retune(self):
        """Select again under the current filters and pins, reusing the profile."""
        if self.profiled is None:
            self.profile()
        allowed = self.allowed()
        self._ensure_profiled(allowed)
        prob = self.problem(allowed)
        t0 = time.perf_counter()
        before, self.plan = self.plan, search.solve(prob)
        self.search_s = time.perf_counter() - t0
        if before is None or dict(before.choice) != dict(self.plan.choice):
            self._compiled, self.precision, self.sensitivities = None, None, {}
        self.measured, self.comparison = None, None
        return self.plan

    def pin(self, layer, descriptor):
        """Force ``layer`` (name or index) onto routine ``descriptor``; takes effect at the next
        :meth:`retune`.  Returns the session."""
        target = self.layer(layer)
        try:
            r = routines.get(target.op, descriptor)
        except KeyError as e:
            raise PinError(f"pin {target.name}={descriptor}: {e.args[0]}") from None
        if not r.applies(target, self.graph.input_specs(target)):
            ok = ", ".join(x.descriptor for x in routines.applicable(self.graph, target, precisions=None))
            raise PinError(f"pin {target.name}={descriptor}: the routine does not apply to {where(target)} "
                           f"(input {self.graph.input_specs(target)[0]}); applicable: {ok}")
        self.pins[target.name] = descriptor
        return self

    def unpin(self, layer):
        """Drop the pin of ``layer``; returns the session."""
        name = self.layer(layer).name
        if name not in self.pins:
            raise PinError(f"layer {name!r} is not pinned (pinned: {', '.join(self.pins) or 'none'})")
        del self.pins[name]
        return self

    # -- running --------------------------------------------------------------------------------
    def _need_plan(self):
        if self.plan is None:
            raise NotTunedError("no plan yet: call tune() first")
        return self.plan

    @property
    def assignment(self):
        return dict(self._need_plan().choice)

    def compile(self):
        """The :class:`~workbench.runtime.compiled.CompiledModel` of the current plan (cached)."""
        with self._compile_lock:   # concurrent first runs compile (and prepare) once
            if self._compiled is None:
                self._compiled = CompiledModel(self.graph, self.assignment, num_threads=self.num_threads,
                                               io_format=self.io_format, max_concurrency=self.max_concurrency,
                                               flush_denormals=self.flush_denormals)
            return self._compiled

    def run(self, inputs):
        """Run the tuned model on ``{input name: array}``; returns ``{output name: array}``
        (new arrays; the inputs are not kept).  Thread-safe (see ``max_concurrency``).  Inputs of
        other shapes than the graph's run on a plan for theirs, made on first use and kept
        (:meth:`for_shapes`; a :class:`~workbench.session_shapes.NewShapeWarning` says what it cost)."""
        shapes = self._logical(inputs)
        if all(tuple(self.graph.inputs[k].shape) == v for k, v in shapes.items() if k in self.graph.inputs):
            return self.compile().run(inputs)
        return self.for_shapes({k: v for k, v in shapes.items() if k in self.graph.inputs}).run(inputs)

    def random_inputs(self, seed=0):
        """Seeded random inputs in this session's ``io_format``."""
        from .runtime.interpreter import io_shape, random_inputs
        feeds = random_inputs(self.graph, seed)
        return {k: (v.transpose(0, 2, 3, 1).copy() if io_shape(self.graph.inputs[k], self.io_format) != v.shape else v)
                for k, v in feeds.items()}

    @property
    def predicted_s(self):
        """Predicted latency of the plan: the sum of its routines' and adapts' costs (in-context
        where :meth:`calibrate` timed them), plus the run's measured overhead outside its steps."""
        return self._need_plan().cost + self.overhead_s

    @property
    def overhead_s(self):
        """The part of a run outside its steps (input checks and loads, output copies, dispatch)
        that :meth:`calibrate` measured; 0 before."""
        return self.context.overhead_s if self.context is not None else 0.0

    # -- what the plan is, layer by layer ---------------------------------------------------
    def __repr__(self):
        state = "untuned" if self.plan is None else (f"tuned ({self.plan.method}), predicted "
                                                       f"{self.plan.cost * 1e3:.2f} ms")
        return (f"Session({self.graph.name!r}, {len(self.graph)} layers, {self.num_threads} threads, "
                f"{len(self.pins)} pins, {state})")
