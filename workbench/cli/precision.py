"""The CLI's words on precision: a lower-precision plan's line in ``tune``, the tolerance of
``--check`` for one, and the ``--calibration`` inputs of ``tune``."""
from __future__ import annotations

import zipfile

import numpy as np

from ..errors import WorkbenchError


def low_precision_check(args, choice):
    """``--check`` of a plan (``{layer: descriptor}``) that computes in a lower precision: at
    the tolerance such a plan's rounding allows (:func:`workbench.tuning.precision.tolerance`)
    unless ``--rtol`` is given, and said.  bfloat16 keeps 8 bits of mantissa: its outputs differ
    from float32 by design, and 1e-4 would fail every such plan."""
    from ..tuning.precision import low_precision, rounding_layers, tolerance
    low = low_precision(choice)
    if low and args.check and args.rtol is None:
        n = sum(d.split(":")[1] != "float32" for d in choice.values())
        weighted = rounding_layers(choice)
        args.rtol = round(tolerance(weighted), 4)
        print(f"{n} layer(s) compute in {', '.join(low)}: --check uses rtol {args.rtol} = 4 x 2^-8 x sqrt({weighted:g}) "
              f"(Winograd layers weigh 64/9; give --rtol to change it)")


def precision_line(session):
    """What the plan computes in and, for a lower precision, its error against float32 (measured
    here when not yet known)."""
    low = session.low_precision
    allowed = ", ".join(session.precisions)
    if not low:
        return f"precision: float32 throughout ({allowed} allowed)"
    n = sum(d.split(":")[1] != "float32" for d in session.plan.choice.values())
    error = session.precision if session.precision is not None else session.precision_error()
    calibrated = f"; biases corrected on {session.calibration}" if session.calibration else ""
    return f"precision: {n} layer(s) in {', '.join(low)} ({allowed} allowed); {error}{calibrated}"


def calibration_feeds(path, session):
    """The feeds of a ``--calibration`` file: sample ``i`` of each input is its array's ``[i]``."""
    from ..runtime.interpreter import io_shape
    try:
        with np.load(path) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise WorkbenchError(f"--calibration {path}: cannot read it as a .npz file of arrays ({e})") from None
    missing = [n for n in session.graph.inputs if n not in arrays]
    if missing:
        raise WorkbenchError(f"--calibration {path}: no array for input(s) {missing} (it holds {sorted(arrays)})")
    counts = set()
    for name, spec in session.graph.inputs.items():
        want = io_shape(spec, session.io_format)
        if tuple(arrays[name].shape[1:]) != tuple(want):
            raise WorkbenchError(f"--calibration {path}: array {name!r} has shape {arrays[name].shape}; expected "
                                 f"(samples, {', '.join(map(str, want))})")
        counts.add(arrays[name].shape[0])
    if len(counts) != 1 or 0 in counts:
        raise WorkbenchError(f"--calibration {path}: the arrays hold different or no sample counts {sorted(counts)}")
    return [{n: np.ascontiguousarray(arrays[n][i]) for n in session.graph.inputs} for i in range(counts.pop())]
