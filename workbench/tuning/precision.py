"""How far a plan's outputs are from float32: the error a lower-precision plan buys its speed with.

:func:`measure` runs the plan and the NumPy reference executor (float32 throughout, an
independent implementation) on the same inputs and reports, over every output and input: the
largest absolute difference, that difference relative to the largest reference magnitude, the
lowest cosine similarity of an output with its reference, and, for outputs with a class axis
(the last one, longer than 1), how often the top-1 class agrees.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class PrecisionError:
    max_abs: float
    max_rel: float
    cosine: float
    top1: float | None   # fraction of rows whose argmax agrees; None: no output has a class axis
    samples: int

    def __str__(self):
        top1 = "" if self.top1 is None else f", top-1 agreement {self.top1:.1%}"
        return (f"vs float32: max abs error {self.max_abs:.3g} (relative {self.max_rel:.3g}), "
                f"cosine {self.cosine:.6f}{top1} ({self.samples} input(s))")

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, d):
        return cls(float(d["max_abs"]), float(d["max_rel"]), float(d["cosine"]),
                   None if d.get("top1") is None else float(d["top1"]), int(d["samples"]))


def tolerance(layers, mantissa_bits=8) -> float:
    """The error, relative to an output's largest magnitude, to expect of a plan with ``layers``
    layers in a format of ``mantissa_bits`` explicit bits (bfloat16: 7, plus the implicit one).

    Each such layer rounds its input, its weights and its output once, each by at most half an
    ulp, 2^-mantissa_bits relative: at most 1.5 * 2^-(mantissa_bits - 1) relative per layer, the
    float32 sums adding nothing of note.  Through a network those errors add like a random walk,
    so by sqrt(layers); the largest element of an output lies a few standard deviations out, and
    a factor 4 covers that (0.016 for one bfloat16 layer, 0.094 for 36).  ``layers`` may be
    fractional: :func:`rounding_layers` weighs routines whose transforms amplify the rounding."""
    return 4.0 * 2.0 ** -mantissa_bits * max(float(layers), 1.0) ** 0.5


def rounding_layers(choice) -> float:
    """The layers of a plan (``{layer: descriptor}``) that compute below float32, each weighted
    by its routine's error variance (``Routine.error_weight``: 1 for a direct routine; a
    bfloat16 Winograd, 64/9), the ``layers`` :func:`tolerance` takes."""
    from .. import routines
    return float(sum(routines.error_weight(d) for d in choice.values() if d.split(":")[1] != "float32"))


def low_precision(choice) -> list:
    """The data types other than float32 that a plan's routines (``{layer: descriptor}``) compute in."""
    return sorted({d.split(":")[1] for d in choice.values()} - {"float32"})


def compare(outputs, references) -> PrecisionError:
    """The error of ``outputs`` (a list of ``{name: array}``, one per input) against ``references``."""
    max_abs, peak, cosine, agree, rows = 0.0, 0.0, 1.0, 0, 0
    for out, ref in zip(outputs, references):
        for name, want in ref.items():
            want = np.asarray(want, np.float64)
            got = np.asarray(out[name], np.float64).reshape(want.shape)
            diff = np.abs(got - want)
            finite = np.isfinite(want) & np.isfinite(got)
            if not np.array_equal(np.isnan(got), np.isnan(want)) or not np.array_equal(got[~finite], want[~finite]):
                max_abs = float("inf")   # a NaN or infinity where float32 has none (or the reverse)
            if finite.any():
                max_abs = max(max_abs, float(diff[finite].max()))
                peak = max(peak, float(np.abs(want[finite]).max()))
                g, w = got[finite], want[finite]
                norm = float(np.linalg.norm(g) * np.linalg.norm(w))
                cosine = min(cosine, float(g @ w) / norm if norm else (1.0 if not g.any() and not w.any() else 0.0))
            if want.ndim >= 2 and want.shape[-1] > 1:
                agree += int((got.reshape(-1, want.shape[-1]).argmax(-1) == want.reshape(-1, want.shape[-1]).argmax(-1)).sum())
                rows += want.size // want.shape[-1]
    return PrecisionError(max_abs, max_abs / peak if peak else max_abs, cosine, agree / rows if rows else None,
                          len(references))


def reference_outputs(session, inputs):
    """The float32 NumPy reference executor's outputs on ``inputs`` (feeds in the session's
    io_format), channels-first: what :func:`measure` compares a plan with."""
    from ..runtime.interpreter import ReferenceExecutor
    ref = ReferenceExecutor(session.graph)
    return [ref.run(as_nchw(session, feeds)) for feeds in inputs]


def as_nchw(session, arrays):
    """Arrays in the session's io_format, channels-first as the reference reads and writes them."""
    return {k: (v.transpose(0, 3, 1, 2) if session.io_format != "nchw" and np.ndim(v) == 4 else v)
            for k, v in arrays.items()}


def measure(session, inputs=None, samples=3, seed=0, references=None) -> PrecisionError:
    """The error of ``session``'s plan against the float32 reference executor, on ``inputs`` (a
    list of ``{name: array}`` in the session's io_format) or on ``samples`` seeded random ones;
    ``references``: the reference's outputs on those inputs, where already computed."""
    if inputs is None:
        inputs = [session.random_inputs(seed=seed + i) for i in range(samples)]
    if references is None:
        references = reference_outputs(session, inputs)
    return compare([as_nchw(session, session.run(feeds)) for feeds in inputs], references)
