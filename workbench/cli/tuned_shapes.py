"""The input shapes of tuned files on the command line: the options a tuned file refuses (its
plan is for the shapes it holds; other shapes of ``run`` are planned, :mod:`workbench.session_shapes`),
and the further ``--shape`` sets ``workbench tune`` tunes into one file."""
from __future__ import annotations

import json

from ..errors import WorkbenchError


def _fixed_shapes(model):
    """The input shapes a tuned file's plan is for (its metadata; the file's inputs may keep the
    source's symbolic dimensions)."""
    from .common import _model_inputs
    from ..onnx_io.read import _dims
    from ..tuned_file import PREFIX
    stored = {p.key: p.value for p in model.metadata_props}.get(PREFIX + "input_shapes")
    try:
        shapes = json.loads(stored) if stored else {}
    except ValueError:
        shapes = {}
    return ", ".join(f"{vi.name} {'x'.join(str(d) for d in shapes.get(vi.name) or _dims(vi) or ['?'])}"
                     for vi in _model_inputs(model))


def _reject_shape_options(args, model, what):
    """A tuned file's input shapes are fixed (its plan was measured for them): other shapes need
    the original model tuned again, which the tuned file does not name."""
    bad = [opt for opt in ("shape", "batch", "resolution", "const") if getattr(args, opt, None)]
    if bad:
        flags = ", ".join(f"--{opt}" for opt in bad)
        raise WorkbenchError(
            f"{args.model} is a tuned file with fixed input shapes ({_fixed_shapes(model)}; {what}): {flags} "
            f"cannot change them; tune the original model for other shapes: workbench tune ORIGINAL.onnx "
            f"{' '.join(_SHAPE_HINT[opt] for opt in bad)} -o NEW.onnx")


_SHAPE_HINT = {"shape": "--shape NAME=1x3xHxW", "batch": "--batch N", "resolution": "--resolution R",
               "const": "--const NAME=VALUE"}


def _other_shapes(session, args):
    """Tune the further ``--shape`` sets into the session (the tuned file keeps their plans)."""
    import warnings
    from .common import _shape_sets
    from ..session_shapes import NewShapeWarning
    for shapes in _shape_sets(args)[1:]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", NewShapeWarning)
            other = session.for_shapes(shapes)
        how = "; ".join(str(w.message).split(": ", 1)[-1] for w in caught if issubclass(w.category, NewShapeWarning))
        print(f"also tuned for input shapes {dict(other.input_shapes())}: predicted {other.predicted_s * 1e3:.4f} ms"
              + (f" ({how})" if how else ""))


def _reject_options(args, model, what):
    _reject_shape_options(args, model, f"{what} its stored plan at them")
    bad = [opt for opt, given in (("--routine (routine filters)", getattr(args, "routine", None)),
                                  ("--no-fuse", getattr(args, "no_fuse", False))) if given]
    if bad:
        verb = "does" if len(bad) == 1 else "do"
        raise WorkbenchError(
            f"{args.model} is a tuned file: {', '.join(bad)} {verb} not apply to it ({what} its stored plan); "
            f"retune instead: workbench tune {args.model} -o NEW.onnx [--routine FILTER]")
