"""Comparison against ONNX Runtime, the correctness oracle (a test/CLI extra, never a routine).

:func:`compare` is what ``workbench run --check`` uses: per output, elementwise

    |ours - ort| <= atol + rtol * |ort|

with ``atol`` scaled to the output's typical magnitude (see :func:`compare`), plus the cosine
similarity and, for classifier-shaped outputs, top-1 agreement.  :func:`relative_error` is the
older one-number summary (``max|ours - ort| / max|ort|``), kept for the tuning and bench code.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import WorkbenchError


def relative_error(ours, reference) -> float:
    """``max|ours - reference| / max|reference|`` (absolute error when the reference is all zero)."""
    ours, reference = np.asarray(ours), np.asarray(reference)
    if ours.shape != reference.shape:
        return float("inf")
    if ours.dtype.kind in "biu" or ours.dtype == bool:
        return 0.0 if np.array_equal(ours, reference) else float("inf")
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    diff = float(np.max(np.abs(ours.astype(np.float64) - reference))) if reference.size else 0.0
    return diff / scale if scale > 0 else diff


def run_onnxruntime(model, feeds, threads=2, optimize=True):
    """Run ``model`` (path, bytes or ModelProto) in ONNX Runtime on the CPU; ``{output: array}``.

    ``optimize=False`` turns ONNX Runtime's graph optimisations off: the difference between the
    two runs is the oracle's own float noise (fusions reorder the arithmetic).
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise WorkbenchError("onnxruntime is not installed; it is needed for --check "
                             "(pip install onnxruntime)") from None
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def compare_outputs(ours, reference):
    """``{output: relative error}`` for every output of ``reference``."""
    return {name: relative_error(ours[name], ref) for name, ref in reference.items()}


@dataclass
class Mismatch:
    """One element beyond tolerance: its index, both values and what was allowed."""
    index: tuple
    ours: float
    ref: float
    allowed: float

    @property
    def off_by(self) -> float:
        """``|ours - ref|`` (inf when a NaN or Inf does not match)."""
        d = abs(self.ours - self.ref)
        return d if np.isfinite(d) else float("inf")


@dataclass
class OutputCheck:
    """The comparison of one output with the reference; see :func:`compare`.

    ``cosine`` and ``top1`` are reported, not pass criteria (a near-tie may flip top-1 within
    tolerance).  ``needed_atol`` is the smallest ``atol`` with which the finite elements would
    pass (inf when a NaN/Inf differs or the shapes differ).
    """
    name: str
    passed: bool
    size: int
    failed_count: int
    rtol: float
    atol: float
    atol_from: str
    max_abs: float
    max_rel: float
    cosine: float
    top1: float | None = None
    top1_rows: int = 0
    worst: list = field(default_factory=list)
    needed_atol: float = 0.0
    problem: str = ""

    def summary(self) -> str:
        """One line: verdict, tolerance and the numbers."""
        if self.problem:
            return f"check {self.name}: FAILED: {self.problem}"
        verdict = "passed" if self.passed else "FAILED"
        top1 = "" if self.top1 is None else \
            f", top-1 agrees on {round(self.top1 * self.top1_rows)}/{self.top1_rows} row(s)"
        return (f"check {self.name}: {verdict}, {self.failed_count} of {self.size} element(s) beyond "
                f"|ours-ort| <= atol + rtol*|ort| (rtol {self.rtol:g}, atol {self.atol:.3g} = {self.atol_from}); "
                f"max abs error {self.max_abs:.3g}, max|ours-ort|/max|ort| {self.max_rel:.3g}, "
                f"cosine {self.cosine:.8f}{top1}")

    def details(self) -> list:
        """Lines about the worst elements (empty when passed)."""
        lines = []
        for m in self.worst:
            idx = ",".join(str(i) for i in m.index)
            ratio = m.off_by / m.allowed if m.allowed > 0 else float("inf")
            lines.append(f"  [{idx}] ours {m.ours:.9g}  ort {m.ref:.9g}  allowed {m.allowed:.3g}  "
                         f"off by {m.off_by:.3g}" + (f" ({ratio:.3g}x allowed)" if np.isfinite(ratio) else ""))
        if self.failed_count > len(self.worst) and self.worst:
            lines.append(f"  ... and {self.failed_count - len(self.worst)} more")
        if not self.passed and not self.problem and np.isfinite(self.needed_atol):
            lines.append(f"  (it would pass with --atol {self.needed_atol * 1.01:.3g})")
        return lines


def magnitude(values) -> float:
    """The largest absolute finite value (0 when there are none): an output's scale."""
    v = np.abs(np.asarray(values, np.float64))
    v = v[np.isfinite(v)]
    return float(v.max()) if v.size else 0.0


def _top1(ours, ref):
    """Top-1 agreement over rows of a classifier-shaped output: 2-D ``(N, C)`` with ``C > 1``
    after dropping trailing size-1 dims (so ``(N, C, 1, 1)`` counts); None otherwise."""
    shape = list(ref.shape)
    while len(shape) > 2 and shape[-1] == 1:
        shape.pop()
    if len(shape) != 2 or shape[1] < 2 or ref.dtype.kind != "f":
        return None, 0
    o, r = ours.reshape(shape), ref.reshape(shape)
    return float(np.mean(np.argmax(o, axis=1) == np.argmax(r, axis=1))), shape[0]


def _cosine(o, r):
    no, nr = float(np.linalg.norm(o)), float(np.linalg.norm(r))
    if no == 0.0 and nr == 0.0:
        return 1.0
    if no == 0.0 or nr == 0.0:
        return 0.0
    return float(np.dot(o.ravel(), r.ravel()) / (no * nr))


def compare(ours, ref, rtol=1e-4, atol=None, noise=0.0, name="output", worst=5) -> OutputCheck:
    """Compare ``ours`` with the reference ``ref`` elementwise.

    An element passes when ``|ours - ref| <= atol + rtol * |ref|``.  Without an explicit ``atol``
    it is ``max(rtol * max|ref|, noise)``: float32 rounding in a deep network is proportional to the
    magnitude of the intermediate terms, not of each result, so an element that is small by
    cancellation or saturation (a detector's background, a logit near zero) carries an error on
    the scale of the output's large values; with the RMS as the scale instead, the NumPy
    reference itself failed on a correct detector whose outputs are mostly near zero (PaddleOCR v6,
    4 of 409,600 elements at 1.02x the allowance).  So the rule never fails where
    ``max|ours - ref| <= rtol * max|ref|``, the project's float32 standard, and it names the
    elements when it does.  ``noise`` is the oracle's own disagreement (ONNX Runtime with and
    without its graph optimisations, ``max|ort - ort_noopt|``): no check can ask for more
    agreement than the oracle has with itself.

    NaN matches NaN only; Inf matches an Inf of the same sign; any other non-finite pair fails.
    Integer and bool outputs must be equal.  ``cosine`` is over the elements finite in both.
    """
    ours, ref = np.asarray(ours), np.asarray(ref)
    base = dict(name=name, size=int(ref.size), rtol=float(rtol), max_abs=float("nan"), max_rel=float("inf"),
                cosine=float("nan"), needed_atol=float("inf"))
    if ours.shape != ref.shape:
        return OutputCheck(passed=False, failed_count=int(ref.size), atol=float("nan"), atol_from="-",
                           problem=f"shape {ours.shape}, onnxruntime gives {ref.shape}", **base)
    exact = ref.dtype.kind in "biu" or ours.dtype.kind in "biu"
    if exact:
        scale, atol_from, rtol = 0.0, "exact (integer output)", 0.0
        atol_v = 0.0
    elif atol is not None:
        atol_v, atol_from = float(atol), "--atol"
    else:
        scale = magnitude(ref)
        atol_v, atol_from = rtol * scale, f"rtol x max|ort| {scale:.3g}"
        if noise and noise > atol_v:
            atol_v, atol_from = float(noise), "onnxruntime's own spread (graph optimisations on vs off)"
    o, r = ours.astype(np.float64), ref.astype(np.float64)
    finite = np.isfinite(o) & np.isfinite(r)
    with np.errstate(invalid="ignore"):   # inf - inf: those pairs are judged by same_nonfinite
        diff = np.where(finite, np.abs(o - r), 0.0)
    allowed = atol_v + rtol * np.abs(np.where(finite, r, 0.0))
    same_nonfinite = (np.isnan(o) & np.isnan(r)) | (np.isinf(r) & (o == r))
    failed = np.where(finite, diff > allowed, ~same_nonfinite)
    excess = np.where(finite, diff - allowed, np.inf)
    excess[~failed] = -np.inf
    n_failed = int(failed.sum())
    picks = []
    if n_failed:
        k = min(worst, n_failed)
        flat = np.argpartition(-excess.ravel(), k - 1)[:k]
        flat = flat[np.argsort(-excess.ravel()[flat], kind="stable")]
        for f in flat:
            idx = np.unravel_index(f, ref.shape)
            picks.append(Mismatch(tuple(int(i) for i in idx), float(o[idx]), float(r[idx]), float(allowed[idx])))
    peak = float(np.max(np.abs(r[finite]))) if finite.any() else 0.0
    max_abs = float(diff.max()) if diff.size else 0.0
    needed = float(np.max(diff - rtol * np.abs(np.where(finite, r, 0.0)), initial=0.0))
    if np.any(failed & ~finite):
        needed = float("inf")
    top1, rows = _top1(o, r) if not exact else (None, 0)
    base.update(max_abs=max_abs, max_rel=max_abs / peak if peak > 0 else max_abs,
                cosine=_cosine(o[finite], r[finite]), needed_atol=max(needed, 0.0), rtol=float(rtol))
    return OutputCheck(passed=n_failed == 0, failed_count=n_failed, atol=atol_v, atol_from=atol_from,
                       top1=top1, top1_rows=rows, worst=picks, **base)


def compare_all(ours, reference, rtol=1e-4, atol=None, noise=None) -> dict:
    """``{output: OutputCheck}`` for every output of ``reference`` (``noise``: ``{output: float}``)."""
    checks = {}
    for name, ref in reference.items():
        if name not in ours:
            checks[name] = OutputCheck(name=name, passed=False, size=int(np.size(ref)), failed_count=int(np.size(ref)),
                                       rtol=rtol, atol=float("nan"), atol_from="-", max_abs=float("nan"),
                                       max_rel=float("inf"), cosine=float("nan"), needed_atol=float("inf"),
                                       problem="missing from our outputs")
            continue
        checks[name] = compare(ours[name], ref, rtol=rtol, atol=atol, noise=(noise or {}).get(name, 0.0), name=name)
    return checks


def oracle_noise(reference, unoptimized) -> dict:
    """``{output: max|a - b|}`` over the elements finite in both runs of the oracle."""
    noise = {}
    for name, a in reference.items():
        b = unoptimized.get(name)
        if b is None or np.shape(a) != np.shape(b) or np.asarray(a).dtype.kind != "f":
            continue
        a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
        ok = np.isfinite(a64) & np.isfinite(b64)
        noise[name] = float(np.max(np.abs(a64[ok] - b64[ok]), initial=0.0))
    return noise
