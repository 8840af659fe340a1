"""The CLI's words on precision: a lower-precision plan's line in ``tune``, the tolerance of
``--check`` for one, and the ``--calibration`` inputs of ``tune`` (qint8's ranges among them)."""
from __future__ import annotations

from ..errors import InputError


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
    if "qint8" in low and session.quant_calibration:
        calibrated += f"; qint8 ranges: {session.quant_calibration}"
    return f"precision: {n} layer(s) in {', '.join(low)} ({allowed} allowed); {error}{calibrated}"


def quantize_ranges(session, args, feeds):
    """Calibrate ``session``'s qint8 ranges on ``feeds`` (``--calibration``), or on seeded random
    inputs with ``--synthetic-calibration`` (warned); a clear error without either."""
    import warnings
    from ..ir.quant import QuantError
    if feeds is None and not args.synthetic_calibration:
        raise QuantError("--precision qint8 needs calibration data: --calibration DIR (.npy/.npz files or images), "
                         "or --synthetic-calibration to time qint8 on random inputs")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        session.calibrate(feeds, method=args.calibration_method, synthetic=feeds is None)
    for w in caught:
        print("warning: " + " ".join(str(w.message).split()))
    print(f"calibrated qint8 ranges: {session.quant_calibration}")


def calibration_feeds(args, session):
    """The feeds of ``--calibration PATH`` (:mod:`workbench.tuning.calibration_data`), images
    preprocessed by ``--mean/--std/--scale/--bgr``."""
    from ..images import parse_floats
    from ..tuning import calibration_data
    options = dict(mean=parse_floats(args.mean, "--mean") if args.mean else None,
                   std=parse_floats(args.std, "--std") if args.std else None,
                   scale=parse_floats(args.scale, "--scale")[0] if args.scale else None, bgr=args.bgr)
    try:
        return calibration_data.load(args.calibration, session.graph.inputs, session.io_format, options)
    except InputError as e:
        raise InputError(f"--calibration: {e}") from None
