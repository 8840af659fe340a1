"""The summary as plain data: the plan's predicted latency, its measured one (the one statistic
every report shows: :class:`~workbench.tuning.measure.Latency`), and each plan it is compared with."""
from __future__ import annotations

from .base import ms, need_plan

#: Past this many other runners, a latency's text counts them instead of naming them.
NAMED_PEERS = 3


def latency(session):
    """The tuned plan's measured latency as shown everywhere (headline, Measure, Compare), or
    None until :meth:`Session.measure` or :meth:`Session.compare` ran: a dict with
    ``median_ms``, ``spread_ms`` (interquartile range), ``runs``, ``side_by_side`` (the runners
    timed in the same interleaved rounds), ``at`` (``time.time()``) and ``text``, which is
    :meth:`Latency.describe` with a long list of peers counted instead of named."""
    lat = session.measured
    if lat is None:
        return None
    peers = tuple(lat.side_by_side)
    at = lat.measured_at
    text = lat.describe(max_named=NAMED_PEERS)
    return dict(median_ms=ms(lat.median), spread_ms=ms(lat.spread), runs=len(lat.samples), side_by_side=peers,
                at=at, text=text)


def summary(session):
    """Predicted and measured latency of the plan, and each plan it is compared with: a dict with
    ``predicted_ms``, ``measured_ms`` (None until measured), ``measured`` (:func:`latency`) and
    ``rows``, one per plan (tuned first): name, predicted ms, measured ms, its interquartile
    range ``spread_ms`` and ``runs`` (None unless :meth:`Session.compare` ran), and the tuned
    plan's speed-up over it, measured where both are, else predicted.  The measured figures are
    the comparison's, all from the same interleaved rounds; before any comparison the tuned
    row's is :attr:`Session.measured` (Measure).  Compare sets :attr:`Session.measured` from
    its rounds, so right after it the headline and the tuned row agree."""
    plan = need_plan(session)
    measured = latency(session)
    comparison = session.comparison
    measured_of = dict(comparison.measured_ms) if comparison is not None else {}
    spread_of = dict(comparison.spread_ms) if comparison is not None else {}
    runs = comparison.runs if comparison is not None else None

    def row(name, predicted_ms):
        return dict(name=name, predicted_ms=predicted_ms, measured_ms=measured_of.get(name),
                    spread_ms=spread_of.get(name), runs=runs if name in measured_of else None)
    extra = session.overhead_s   # every plan pays the run's overhead outside its steps
    rows = [row("tuned", ms(plan.cost + extra))]
    if measured is not None and "tuned" not in measured_of:
        rows[0].update(measured_ms=measured["median_ms"], spread_ms=measured["spread_ms"], runs=measured["runs"])
    rows[0]["speedup"] = 1.0
    others = {"greedy": session.greedy_plan(), **session.family_plans()}
    rows += [row(name, ms(other.cost + extra)) for name, other in others.items()]
    if "onnxruntime" in measured_of:
        rows.append(row("onnxruntime", None))
    tuned_measured = measured_of.get("tuned")
    for r in rows[1:]:
        if r["measured_ms"] is not None and tuned_measured is not None:
            r["speedup"] = r["measured_ms"] / tuned_measured
        else:
            r["speedup"] = r["predicted_ms"] / rows[0]["predicted_ms"] if r["predicted_ms"] else None
    return dict(predicted_ms=ms(plan.cost + extra), measured_ms=measured["median_ms"] if measured else None,
                measured=measured, rows=rows, precision=precision(session))


def precision(session):
    """What the plan computes in, and for a lower precision its error against float32 (measured
    here on first sight: it is shown wherever the plan's latency is): a dict with ``allowed``,
    ``low`` (the data types besides float32), ``layers`` (how many compute in them), ``error``
    (:class:`~workbench.tuning.precision.PrecisionError` or None), ``budget`` (what the error
    budget did, :mod:`workbench.tuning.budget`, or None), ``calibration`` (what bias correction
    was calibrated on, or None) and ``text``."""
    plan = need_plan(session)
    low = session.low_precision
    n = sum(d.split(":")[1] != "float32" for d in plan.choice.values())
    error = None
    if low:
        error = session.precision if session.precision is not None else session.precision_error()
        text = f"{n} layer(s) in {', '.join(low)}; {error}"
        if session.calibration:
            text += f"; biases corrected on {session.calibration}"
    else:
        text = "float32 throughout"
    budget = str(session.budget) if session.budget is not None else None
    if budget:
        text += f"; {budget}"
    return dict(allowed=list(session.precisions), low=low, layers=n, error=error, budget=budget,
                calibration=session.calibration if low else None, text=text)
