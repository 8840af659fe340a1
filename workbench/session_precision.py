"""A :class:`~workbench.session.Session`'s plan against the float32 reference, for a plan that
computes in a lower precision: its error (:meth:`precision_error`) and the error budget's fit
(:mod:`workbench.tuning.budget`).  A mixin: it reads the session's graph and plan."""
from __future__ import annotations

from .errors import WorkbenchError


class SessionPrecision:
    """The precision methods of :class:`~workbench.session.Session`."""

    def precision_error(self, inputs=None, samples=3):
        """The plan's outputs against the float32 NumPy reference (max error, cosine, top-1
        agreement; :mod:`workbench.tuning.precision`), on ``inputs`` (a list of feeds) or
        ``samples`` seeded random ones; kept as :attr:`precision` until the plan changes."""
        from .tuning.precision import measure
        self._need_plan()
        self.precision = measure(self, inputs, samples)
        return self.precision

    @property
    def low_precision(self):
        """The data types other than float32 the plan computes in ([] for a float32 plan)."""
        from .tuning.precision import low_precision
        return low_precision(self._need_plan().choice)

    def calibrate(self, inputs=None, method="minmax", percentile=99.999, synthetic=False):
        """Calibrate the quantization ranges qint8 routines need: the float32 reference runs
        ``inputs`` (a list of feeds in the session's io_format, or a path that
        :func:`~workbench.tuning.calibration_data.load` reads) and every float activation gets
        per-tensor uint8 parameters by ``method`` (``minmax``, ``percentile``, ``mse``,
        ``entropy``; :mod:`workbench.tuning.ranges`), kept in ``graph.quant`` and the tuned file.
        Bias correction's means are calibrated on the same inputs (:meth:`calibrate_means`).
        ``synthetic=True`` without inputs draws seeded random ones, with a warning: their ranges
        are not the data's, fit for timing qint8 and nothing else.  Returns the parameters by tensor."""
        import warnings
        from .ir.quant import QuantError
        from .tuning import calibration_data, input_stats, ranges
        from .tuning.precision import as_nchw
        if inputs is None:
            if not synthetic:
                raise QuantError("missing calibration data: calibrate(inputs) needs a list of feeds or a path "
                                 "(calibrate(synthetic=True) draws random ones, for timing only)")
            warnings.warn("calibrating qint8 on seeded random inputs: the ranges are not your data's, "
                          "so the plan's accuracy on real inputs is unknown", stacklevel=2)
            feeds = input_stats.default_inputs(self)
        elif isinstance(inputs, (str, bytes)) or hasattr(inputs, "__fspath__"):
            feeds = calibration_data.load(inputs, self.graph.inputs, self.io_format)
        else:
            feeds = list(inputs)
        if not feeds:
            raise QuantError("missing calibration data: no inputs given")
        self.calibrate_means(feeds)
        model = self.graph.meta.get("model_quant", {})   # a pre-quantized model's parameters stay
        self.graph.quant = type(self.graph.quant)({t: p for t, p in self.graph.quant.items() if t in model})
        table = ranges.calibrate(self.graph, [as_nchw(self, f) for f in feeds], method, percentile)
        kind = "seeded random" if inputs is None else "given"
        self.quant_calibration = f"{method} over {len(feeds)} {kind} input(s)"
        self.calibration_inputs = None if inputs is None else feeds
        self.profiled, self.plan, self._compiled, self.precision = None, None, None, None
        return table

    def calibrate_means(self, inputs=None):
        """Calibrate bias correction (:mod:`workbench.routines.bias_correction`): the float32
        reference runs ``inputs`` (a list of feeds in the session's io_format; default: seeded
        random ones, :func:`~workbench.tuning.input_stats.default_inputs`) and each layer whose
        weights bfloat16 routines round keeps its input's mean per channel, from which those
        routines correct their biases.  Returns ``{layer: mean}``; :attr:`calibration` says
        what it was calibrated on."""
        from .runtime.interpreter import check_inputs
        from .tuning import input_stats
        from .tuning.precision import as_nchw
        given = inputs is not None
        feeds = list(inputs) if given else input_stats.default_inputs(self)
        for i, f in enumerate(feeds):
            try:
                check_inputs(self.graph, f, self.io_format)
            except WorkbenchError as e:
                raise type(e)(f"calibration input {i}: {e}") from None
        means = input_stats.collect(self.graph, [as_nchw(self, f) for f in feeds])
        self.calibration = f"{len(feeds)} {'given' if given else 'seeded random'} input(s)"
        self._compiled, self.precision = None, None
        return means

    def _error_inputs(self, inputs, samples=3):
        """``inputs``, else the calibration inputs, else ``samples`` seeded random ones."""
        if inputs is not None:
            return list(inputs)
        if self.calibration_inputs is not None:
            return list(self.calibration_inputs)
        return [self.random_inputs(seed=i) for i in range(samples)]

    def sensitivity(self, inputs=None):
        """Each low-precision layer's sensitivity: the error of the outputs against float32 (a
        :class:`~workbench.tuning.precision.PrecisionError`) when only that layer of the plan
        computes below float32 (:func:`workbench.tuning.frontier.sensitivity`), on ``inputs``
        (default: the calibration inputs).  Kept as :attr:`sensitivities` for this plan."""
        from .tuning.frontier import sensitivity
        self._need_plan()
        self.sensitivities = sensitivity(self, self._error_inputs(inputs))
        return self.sensitivities

    def frontier(self, inputs=None, steps=None):
        """The latency/error Pareto frontier between the fastest plan and float32
        (:func:`workbench.tuning.frontier.frontier`): a list of points, each a plan with a
        growing set of layers kept in float32, its predicted latency and measured error on
        ``inputs`` (default: the calibration inputs), ``pareto`` where no point beats it."""
        from .tuning.frontier import frontier
        return frontier(self, self._error_inputs(inputs), steps)

    def pin_precision(self, layer, dtype):
        """Keep ``layer`` (name or index) in data type ``dtype`` (float32, bfloat16, qint8 or an
        alias), whatever :attr:`precisions` allows elsewhere: the selection then chooses among its
        routines of that type only (a routine pin still wins).  Takes effect at the next
        :meth:`retune`; returns the session.  PinError where no routine of that type applies."""
        from .errors import PinError
        from .ir.formats import parse_precisions
        target = self.layer(layer)
        try:
            dtype = parse_precisions([dtype])[-1]
        except ValueError as e:
            raise PinError(f"pin {target.name} to a precision: {e}") from None
        self._precision_routines(target.name, dtype)   # validated now, not at the next retune
        self.precision_pins[target.name] = dtype
        return self

    def unpin_precision(self, layer):
        """Drop ``layer``'s precision pin; returns the session."""
        from .errors import PinError
        name = self.layer(layer).name
        if self.precision_pins.pop(name, None) is None:
            raise PinError(f"layer {name!r} has no precision pin (pinned: {', '.join(self.precision_pins) or 'none'})")
        return self

    def _precision_routines(self, name, dtype):
        """The descriptors of ``dtype`` routines that apply to layer ``name`` (the reference only
        where nothing else does); PinError where none does."""
        from . import routines
        from .errors import PinError, where
        from .tuning.profiler import candidates
        layer = self.graph.layer(name)
        found = [r.descriptor for r in candidates(self.graph, layer, (dtype,))]
        if not found:
            needs = " (calibrate() first: qint8 routines need the tensors' ranges)" if dtype == "qint8" else ""
            ok = sorted({r.dtype for r in routines.applicable(self.graph, layer, precisions=None)})
            raise PinError(f"pin {name} to {dtype}: no {dtype} routine applies to {where(layer)}{needs}; "
                           f"its routines compute in {', '.join(ok)}")
        return found

    def _fit_budget(self, inputs):
        from .tuning.budget import fit
        from .tuning.budget import Budget
        report = fit(self, Budget(self.max_error, self.min_cosine), inputs)
        if self.budget is not None:   # a second fit: it started from the first one's demotions
            report.demoted = self.budget.demoted + [n for n in report.demoted if n not in self.budget.demoted]
            report.before = self.budget.before
        self.budget = report
        return report
