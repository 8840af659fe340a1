"""What a :class:`~workbench.session.Session` writes and reads: the tuned file, through the plain
:class:`~workbench.tuned_file.TunedRecord` (so the file module knows nothing of sessions), and the
profile, trace and per-layer exports of :mod:`workbench.ui.exports`."""
from __future__ import annotations

import os
import warnings

from . import tuned_file
from .errors import WorkbenchError
from .session_shapes import shape_key
from .tuning import search
from .tuning.profiler import problem as make_problem
from .ui import exports


class NotTunedError(WorkbenchError):
    """An operation that needs a plan was asked of a session that has none yet."""


class SessionFiles:
    """The file methods of :class:`~workbench.session.Session` (a mixin: it reads the session's
    graph, plan, costs and settings, and builds sessions with ``cls``)."""

    # -- tuned files ------------------------------------------------------------------------------
    def to_record(self):
        """The plan as a :class:`~workbench.tuned_file.TunedRecord` (what :meth:`export` writes)."""
        plan = self._need_plan()
        return tuned_file.TunedRecord(
            self.graph, dict(plan.choice), self.costs()[0] if self.profiled is not None else {},
            self.num_threads, self.io_format, self.predicted_s, plan_method=plan.method,
            measured_s=self.measured.median if self.measured is not None else None,
            pins=dict(self.pins), filters=list(self.filters), adapts_into=self._adapts_into(),
            precisions=list(self.precisions),
            precision_error=self.precision.to_dict() if self.precision is not None else None,
            max_error=self.max_error, demoted=sorted(self.demoted), calibration=self.calibration,
            min_cosine=self.min_cosine, quant_calibration=self.quant_calibration,
            precision_pins=dict(self.precision_pins), symbolic=dict(self._symbolic or {}),
            shape_plans=self._shape_records())

    def _adapts_into(self):
        """``{layer: [[tensor, from, to], ...]}``: the plan's adapts, by the layers that read them."""
        into = {}
        for adapt, readers in self.plan.readers.items():
            for r in readers:
                into.setdefault(r, []).append([adapt[0], str(adapt[1]), str(adapt[2])])
        into.pop(search.OUTPUT, None)
        return into

    @classmethod
    def from_record(cls, record, num_threads=None, db=None, warn=True, name="model", stacklevel=2):
        """A session ready to run from a :class:`~workbench.tuned_file.TunedRecord`, running with
        ``num_threads`` (default: the tuned count); warns (:class:`~workbench.tuned_file.FingerprintWarning`,
        at ``stacklevel``) when this machine differs from the one it was tuned on."""
        session = cls(record.graph, num_threads=num_threads or record.num_threads, db=db, io_format=record.io_format)
        session.filters = list(record.filters)
        session.pins = dict(record.pins)
        session.precisions = tuple(record.precisions)
        session.max_error, session.demoted = record.max_error, set(record.demoted)
        session.calibration = record.calibration
        session.min_cosine, session.quant_calibration = record.min_cosine, record.quant_calibration
        session.precision_pins = dict(record.precision_pins)
        if record.precision_error is not None:
            from .tuning.precision import PrecisionError
            session.precision = PrecisionError.from_dict(record.precision_error)
        session._adopt(record.choice, record.predicted_s, f"loaded ({record.plan_method})")
        if record.source is not None:   # other input shapes: imported from the file again
            session._source, session._import = record.source, {"constants": None, "fuse": True}
            session._symbolic = dict(record.symbolic)
            session._stored_shapes = {shape_key(p["shapes"]): p for p in record.shape_plans}
        session.tuned_on = record.fingerprint_facts
        session.tuned_metadata = record.metadata
        session.loaded_costs = record.costs
        differs = record.fingerprint_differs(session.num_threads) if warn else []
        if differs:
            warnings.warn(tuned_file.FingerprintWarning(
                f"{name} was tuned on another machine or setup (differs in: {', '.join(differs)}); "
                f"it runs, but its routines may not be the fastest here: retune with session.retune() or "
                f"`workbench tune`"), stacklevel=stacklevel)
        return session

    def _adopt(self, choice, predicted_s, method):
        """Take ``choice`` (``{layer: descriptor}``) as the plan, at cost ``predicted_s``: the adapts
        follow from it (the same ones the tuned plan had, graph outputs included)."""
        structure = make_problem(self.graph, {n: {d: 0.0} for n, d in choice.items()}, {}, None, self.io_format)
        self.plan = search.plan_of(structure, dict(choice), method)
        self.plan.cost = predicted_s

    @classmethod
    def load(cls, source, num_threads=None, db=None, warn=True, name=None, stacklevel=2):
        """A ready-to-run session from a tuned file (path, bytes or ModelProto; ``name`` for
        messages): :func:`workbench.tuned_file.read`, then :meth:`from_record`."""
        name = name or (str(source) if isinstance(source, (str, os.PathLike)) else "model")
        return cls.from_record(tuned_file.read(source, name=name), num_threads=num_threads, db=db, warn=warn,
                               name=name, stacklevel=stacklevel + 1)

    def export(self, path, measure_runs=30):
        """Save the tuned model as one ONNX file (see :mod:`workbench.tuned_file`); measures the
        plan first (``measure_runs`` runs) unless already measured.  Returns ``path``."""
        self._need_plan()
        if self.measured is None and measure_runs:
            self.measure(runs=measure_runs)
        tuned_file.write(self.to_record(), path)
        return path

    # -- other exports ----------------------------------------------------------------------------
    def export_profile(self, path):
        """The profile records as JSON lines (one per layer x routine and per adapt)."""
        if self.profiled is None:
            raise NotTunedError("not profiled yet: call profile() or tune() first")
        exports.write_text(path, exports.profile_jsonl(self.graph, self.profiled))
        return path

    def export_trace(self, path, inputs=None):
        """A Chrome-trace JSON of one tuned inference (opens in Perfetto / chrome://tracing)."""
        exports.write_text(path, exports.chrome_trace(self.timed_run(inputs), self.graph.name, self.num_threads))
        return path

    def export_csv(self, path, inputs=None):
        """Per-layer CSV: the plan's routine, profiled and measured ms, runner-up, adapts."""
        measured = {}
        for step, _, dt in self.timed_run(inputs):
            measured[step.name] = measured.get(step.name, 0.0) + dt
        exports.write_text(path, exports.layer_csv(self.layer_rows(), measured))
        return path
