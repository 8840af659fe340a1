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

    def _fit_budget(self, inputs):
        from .tuning.budget import fit
        report = fit(self, self.max_error, inputs)
        if self.budget is not None:   # a second fit: it started from the first one's demotions
            report.demoted = self.budget.demoted + [n for n in report.demoted if n not in self.budget.demoted]
            report.before = self.budget.before
        self.budget = report
        return report
