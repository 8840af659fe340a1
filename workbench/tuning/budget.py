"""Selection under an error budget: the fastest plan whose error against float32 stays within
a :class:`Budget`: ``max_error`` (the largest absolute difference over the output's peak
magnitude, as :class:`~workbench.tuning.precision.PrecisionError` reports it) and/or
``min_cosine`` (the lowest cosine similarity of an output with float32's).

The selection itself prices time only; a plan it returns with bfloat16 allowed may round more
than the user accepts (OpenVINO's bfloat16 ResNet-50 is 0.0126 off at the peak; the DP's plan
came to 0.0115 on one profile and 0.0133 on another).  :func:`fit` closes that loop the way
accuracy-aware mixed-precision tools do, by keeping the layers where low precision costs the most
error for the least time in float32:

1. each low-precision layer of the plan is run alone on the float32 reference's inputs for it
   (:class:`LocalErrors`), its output compared with the reference's: its *local* error, the
   rounding it adds by itself;
2. the layers are ranked by squared local error (independent roundings add in variance) per
   second that float32 would cost on that layer (the best float32 routine's cost minus the
   chosen one's, at least a microsecond);
3. the smallest prefix of that ranking whose demotion (float32 routines only on those layers,
   the selection then run again, so adapts and neighbours re-balance) brings the whole plan's
   error within budget is found by bisection, every candidate plan compiled and measured on the
   check inputs against references computed once.

Demotion can move other layers into bfloat16 (a neighbour no longer pays a cast); the loop then
ranks the new plan's layers and goes on, a few rounds at most.  With every low-precision layer
demoted the plan is float32 and its error that of float32 itself, so a budget the float32 plan
meets is always met; a budget below that is reported as missed.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import numpy as np

from ..errors import WorkbenchError
from ..ir.formats import Format
from ..ir.graph import NCHW
from .. import routines
from ..routines import adapts
from ..runtime.interpreter import ReferenceExecutor
from .precision import as_nchw, low_precision, measure, reference_outputs

#: Ranking rounds (a round ranks the current plan's low-precision layers and bisects on them).
ROUNDS = 3


@dataclass(frozen=True)
class Budget:
    """What a plan's error against float32 may be: ``max_error`` (max_rel at most) and/or
    ``min_cosine`` (cosine at least); None for a bound not set."""

    max_error: float = None
    min_cosine: float = None

    def __post_init__(self):
        if self.max_error is not None:
            object.__setattr__(self, "max_error", checked(self.max_error))
        if self.min_cosine is not None:
            c = self.min_cosine
            if isinstance(c, bool) or not isinstance(c, numbers.Real) or not -1 <= c <= 1:
                raise WorkbenchError(f"min_cosine: a cosine budget is a number in [-1, 1] (e.g. 0.99), got {c!r}")
            object.__setattr__(self, "min_cosine", float(c))

    @property
    def empty(self):
        return self.max_error is None and self.min_cosine is None

    def within(self, err) -> bool:
        """Whether ``err`` (a PrecisionError) keeps to every bound set."""
        return ((self.max_error is None or err.max_rel <= self.max_error)
                and (self.min_cosine is None or err.cosine >= self.min_cosine))

    def __str__(self):
        parts = ([] if self.max_error is None else [f"max error {self.max_error:.3g}"]) + \
                ([] if self.min_cosine is None else [f"cosine >= {self.min_cosine:.6g}"])
        return "error budget " + (", ".join(parts) or "none")

    @staticmethod
    def of(err):
        """``err``'s figures as the budget reads them."""
        return f"max error {err.max_rel:.3g}, cosine {err.cosine:.6f}"


@dataclass
class BudgetReport:
    """What :func:`fit` did: the budget, the error of the plan it started from and of the plan it
    kept, the layers it kept in float32 (in ranking order), and the plans it measured."""

    budget: Budget
    before: object = None            # PrecisionError of the unconstrained plan
    after: object = None             # PrecisionError of the plan kept
    demoted: list = field(default_factory=list)
    local: dict = field(default_factory=dict)    # layer -> local error (relative to its output's peak)
    evaluated: int = 0
    low_left: bool = False           # the plan kept still computes below float32

    @property
    def max_error(self):
        return self.budget.max_error

    @property
    def met(self):
        return self.after is not None and self.budget.within(self.after)

    def __str__(self):
        if self.before is not None and self.budget.within(self.before):
            return f"{self.budget}: met by the fastest plan ({Budget.of(self.before)})"
        state = ("met" if self.met else f"MISSED (after {ROUNDS} rounds of ranking)" if self.low_left
                 else "MISSED (the float32 plan itself is further off)")
        return (f"{self.budget}: {state}; {len(self.demoted)} layer(s) kept in float32 "
                f"({Budget.of(self.before)} -> {Budget.of(self.after)}, {self.evaluated} plan(s) measured)")

    def to_dict(self):
        return {"max_error": self.budget.max_error, "min_cosine": self.budget.min_cosine, "demoted": list(self.demoted),
                "before": self.before.to_dict() if self.before is not None else None,
                "after": self.after.to_dict() if self.after is not None else None}


def checked(max_error):
    """``max_error`` as a float; :class:`~workbench.errors.WorkbenchError` unless a number >= 0."""
    if isinstance(max_error, bool) or not isinstance(max_error, numbers.Real) or not max_error >= 0:
        raise WorkbenchError(f"max_error: an error budget is a number >= 0 (relative to the output's peak, "
                             f"e.g. 0.01), got {max_error!r}")
    return float(max_error)


def _to(array, spec, src, dst, threads, params=None):
    """``array`` holding ``spec`` in format ``src``, converted to ``dst`` by the registered adapts
    (``params``: the tensor's quantization parameters, for a quantize or dequantize)."""
    if src == dst:
        return array
    held = spec.with_format(src)
    out = np.empty(adapts.physical_shape(spec.with_format(dst)), np.dtype(dst.dtype))
    adapts.Chain(adapts.path(held, dst), held).run(np.ascontiguousarray(array), out, threads, params)
    return out


def _diff_peak(got, want):
    """The largest absolute difference over the finite values, and the reference's peak there."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    finite = np.isfinite(got) & np.isfinite(want)
    if not finite.any():
        return 0.0, 0.0
    return float(np.abs(got[finite] - want[finite]).max()), float(np.abs(want[finite]).max())


class LocalErrors(ReferenceExecutor):
    """The float32 reference executor that also runs ``probes`` (``{layer: routine}``) on each
    probed layer's reference inputs and records, in :attr:`errors`, the largest error of the
    routine's outputs against the reference's, over all runs, relative to the reference's peak
    (as :func:`~workbench.tuning.precision.compare` measures a model's outputs).  The reference
    outputs flow on, so one layer's error does not reach the next one's."""

    def __init__(self, graph, probes, num_threads=1):
        super().__init__(graph)
        self.probes, self.threads = dict(probes), num_threads
        self.states = {}
        self._seen = {}   # layer -> [largest difference, largest reference magnitude]

    @property
    def errors(self):
        """``{layer: local error}`` of the probed layers run so far."""
        return {name: (d / p if p else d) for name, (d, p) in self._seen.items()}

    def run_layer(self, layer, args):
        ref = super().run_layer(layer, args)
        routine = self.probes.get(layer.name)
        if routine is not None and routine.view_of_input is None:
            seen = self._seen.setdefault(layer.name, [0.0, 0.0])
            for diff, peak in self._local(layer, routine, args, ref):
                seen[0], seen[1] = max(seen[0], diff), max(seen[1], peak)
        return ref

    def _local(self, layer, routine, args, ref):
        graph, specs = self.graph, self.graph.input_specs(layer)
        if layer.name not in self.states:
            self.states[layer.name] = routines.prepared(routine, layer, specs, self.threads, quant=graph.quant)
        ins = []
        for i, (a, spec, fmt) in enumerate(zip(args, specs, routine.input_formats(layer, specs))):
            if i in layer.consts or a is None or spec is None:
                ins.append(a)
            else:
                ins.append(_to(a, spec, Format(spec.dtype, NCHW), fmt, self.threads,
                               graph.quant.get(layer.inputs[i])))
        outs = [np.empty(adapts.physical_shape(s.with_format(fmt)), np.dtype(fmt.dtype))
                for s, fmt in zip(layer.out_specs, routine.output_formats(layer))]
        routine.run(layer, self.states[layer.name], ins, outs, self.threads)
        for out, want, spec, fmt, t in zip(outs, ref, layer.out_specs, routine.output_formats(layer), layer.outputs):
            got = _to(out, spec, fmt, Format(spec.dtype, NCHW), self.threads, graph.quant.get(t))
            yield _diff_peak(got.reshape(np.shape(want)), want)


def local_errors(session, inputs):
    """``{layer: local error}`` of the plan's low-precision layers on ``inputs`` (NCHW feeds)."""
    from .. import routines
    choice = session.plan.choice
    probes = {name: routines.get(session.graph.layer(name).op, d) for name, d in choice.items()
              if d.split(":")[1] != "float32"}
    ex = LocalErrors(session.graph, probes, session.num_threads)
    for feeds in inputs:
        ex.run(feeds)
    return ex.errors


def _float32_loss(session, names):
    """``{layer: seconds}`` the best float32 routine costs over the chosen one (at least 1 us)."""
    costs, _ = session.costs()
    loss = {}
    for name in names:
        c = costs.get(name, {})
        f32 = [v for d, v in c.items() if d.split(":")[1] == "float32"]
        chosen = c.get(session.plan.choice[name])
        loss[name] = max((min(f32) - chosen) if f32 and chosen is not None else 0.0, 1e-6)
    return loss


def rank(local, loss):
    """Layers by error removed per second of float32 time, most first (ties by name)."""
    return sorted(local, key=lambda n: (-(local[n] ** 2) / loss[n], n))


def fit(session, budget, inputs=None, samples=3, seed=0):
    """Demote the fewest low-precision layers of ``session``'s plan (by :func:`rank`) to keep its
    error within ``budget`` (a :class:`Budget`, or a number: a ``max_error``); sets
    ``session.demoted`` and the plan, returns a :class:`BudgetReport`.

    ``inputs``: a list of feeds in the session's io_format (default: ``samples`` seeded random ones)."""
    if not isinstance(budget, Budget):
        budget = Budget(max_error=budget)
    if inputs is None:
        inputs = [session.random_inputs(seed=seed + i) for i in range(samples)]
    refs = reference_outputs(session, inputs)
    nchw = [as_nchw(session, f) for f in inputs]
    report = BudgetReport(budget)

    def error_of(demoted):
        session.demoted = set(demoted)
        session.retune()
        report.evaluated += 1
        return measure(session, inputs, references=refs)

    base = set(session.demoted)
    err = report.before = error_of(base)
    for _ in range(ROUNDS):
        if budget.within(err) or not low_precision(session.plan.choice):
            break
        local = local_errors(session, nchw)
        report.local.update(local)
        order = rank(local, _float32_loss(session, local))
        lo, hi, hi_err = 0, len(order), None   # lo: known over budget; hi: assumed within
        while hi - lo > 1:
            mid = (lo + hi) // 2
            e = error_of(base | set(order[:mid]))
            if budget.within(e):
                hi, hi_err = mid, e
            else:
                lo = mid
        base |= set(order[:hi])
        report.demoted += [n for n in order[:hi] if n not in report.demoted]
        err = hi_err if hi_err is not None and session.demoted == base else error_of(base)
    report.after, report.low_left = err, bool(low_precision(session.plan.choice))
    session.precision = err
    return report
