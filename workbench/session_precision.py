"""A :class:`~workbench.session.Session`'s plan against the float32 reference, for a plan that
computes in a lower precision: its error (:meth:`precision_error`) and the error budget's fit
(:mod:`workbench.tuning.budget`).  A mixin: it reads the session's graph and plan."""
from __future__ import annotations


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

    def _fit_budget(self, inputs):
        from .tuning.budget import fit
        report = fit(self, self.max_error, inputs)
        if self.budget is not None:   # a second fit: it started from the first one's demotions
            report.demoted = self.budget.demoted + [n for n in report.demoted if n not in self.budget.demoted]
            report.before = self.budget.before
        self.budget = report
        return report
