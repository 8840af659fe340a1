"""The graph inputs' shapes and data types: symbolic dimensions resolved from ``batch``,
``resolution`` and ``shapes`` (every one left without a value listed in one error), and inputs
given as constants (``constants=``, ``--const``) checked and converted."""
from __future__ import annotations

import numpy as np
from onnx import helper

from ..errors import ModelImportError, ShapeError
from ..ir.graph import TensorSpec


def _np_dtype(elem_type, where):
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).name
    except (KeyError, TypeError):
        raise ModelImportError(f"{where}: unsupported element type {elem_type}") from None


def _dims(vi):
    """Declared dims of a graph input: ints where fixed, the dim_param (or '?') where symbolic."""
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?") for d in t.shape.dim]


def _placeholder(dim, i, rank):
    """How a suggested ``--shape`` writes a declared dim: its size where fixed, else N for the
    batch, H and W for an image's height and width, D<i> for any other, unless the model's own
    name is short (exporters' names, such as 'p2o.DynamicDimension.0', make the flag unreadable)."""
    if isinstance(dim, int):
        return str(dim)
    if len(dim) <= 3 and dim.isalnum():   # the model's own short name ('N', 'K') reads best
        return dim
    if i == 0:
        return "N"
    if rank == 4 and i in (2, 3):
        return "HW"[i - 2]
    return f"D{i}"


def _resolve_input_shape(vi, batch, resolution, shapes, missing):
    """The input's TensorSpec, or None after appending ``(input, dim index, label, kind)`` to
    ``missing`` for each symbolic dim nothing gives a value (all are reported at once)."""
    name = vi.name
    t = vi.type.tensor_type
    if not vi.type.HasField("tensor_type"):
        raise ModelImportError(f"graph input {name!r}: only tensor inputs are supported")
    dtype = _np_dtype(t.elem_type, f"graph input {name!r}")
    dims = list(t.shape.dim) if t.HasField("shape") else None
    given = shapes.get(name) if shapes else None
    if given is not None:
        given = tuple(int(d) for d in given)
        if dims is not None:
            if len(given) != len(dims):
                raise ShapeError(f"graph input {name!r}: shape {given} given, but the model declares rank {len(dims)}")
            for i, (d, g) in enumerate(zip(dims, given)):
                if d.HasField("dim_value") and d.dim_value > 0 and d.dim_value != g:
                    raise ShapeError(f"graph input {name!r}: dim {i} is fixed to {d.dim_value} in the model, "
                                     f"the given shape {given} says {g}")
        return TensorSpec(given, dtype)
    if dims is None:
        missing.append((name, None, None, "shape"))
        return None
    out = []
    for i, d in enumerate(dims):
        fixed = d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
        if i == 0 and batch is not None:
            if fixed is not None and fixed != batch:
                raise ShapeError(f"graph input {name!r}: batch dim is fixed to {fixed} in the model, batch={batch} given")
            out.append(batch)
        elif fixed is not None:
            out.append(fixed)
        elif len(dims) == 4 and i in (2, 3) and resolution is not None:
            out.append(resolution[i - 2])
        else:
            kind = "batch" if i == 0 else "resolution" if len(dims) == 4 and i in (2, 3) else "other"
            missing.append((name, i, d.dim_param or "?", kind))
            out.append(None)
    return None if None in out else TensorSpec(out, dtype)


def symbolic_dims_message(model_inputs, missing):
    """One message for every symbolic dim without a value, with the CLI flags and the Python
    keywords that give them.  ``model_inputs``: the graph's non-initializer ValueInfos."""
    by_input = {}
    for name, i, label, kind in missing:
        by_input.setdefault(name, []).append((i, label, kind))
    declared = {vi.name: _dims(vi) for vi in model_inputs}
    kinds = {kind for _, _, _, kind in missing}
    lines = [f"{len(missing)} symbolic input dimension(s) have no value:"]
    shape_flags, shape_kw = [], []
    for name, items in by_input.items():
        dims = declared.get(name)
        if dims is None:
            lines.append(f"  {name!r}: no declared shape; give it whole with --shape {name}=D1xD2x...")
            shape_flags.append(f"--shape {name}=D1xD2x...")
            continue
        what = {"batch": " (batch)", "resolution": " (resolution)", "other": ""}
        lines.append(f"  {name!r} ({', '.join(str(d) for d in dims)}): "
                     + ", ".join(f"dim {i} {label!r}{what[kind]}" for i, label, kind in items))
        shown = [_placeholder(d, i, len(dims)) for i, d in enumerate(dims)]
        shape_flags.append(f"--shape {name}={'x'.join(shown)}")
        shape_kw.append(f"{name!r}: ({', '.join(shown)})")
    quick, kw = [], []
    if "batch" in kinds:
        quick.append("--batch N")
        kw.append("batch=N")
    if "resolution" in kinds:
        quick.append("--resolution R (or --resolution HxW)")
        kw.append("resolution=R or (H, W)")
    if quick and not kinds & {"other", "shape"}:
        lines.append(f"give them with {' '.join(quick)} (Python: {', '.join(kw)}), or per input with "
                     f"{' '.join(shape_flags)} (Python: shapes={{{', '.join(shape_kw)}}})")
    else:
        lines.append(f"give them per input with {' '.join(shape_flags)} (Python: shapes={{{', '.join(shape_kw)}}})"
                     + ("; --batch N / --resolution R cover batch and H, W only" if quick else ""))
    lines.append("with sizes in place of the names; --shape takes precedence over "
                 "--batch and --resolution")
    return "\n".join(lines)


def constant_inputs(g, consts, constants):
    """``constants`` (input name -> value) checked against the model's inputs and converted to
    their data types and declared shapes."""
    out = {}
    declared = {vi.name: vi for vi in g.input if vi.name not in consts}
    for k, v in (constants or {}).items():
        vi = declared.get(k)
        if vi is None:
            raise ShapeError(f"a constant is given for {k!r}, which is not an input of the model; its inputs are "
                             f"{list(declared)}")
        t = vi.type.tensor_type
        dtype = _np_dtype(t.elem_type, f"graph input {k!r}")
        try:
            a = np.asarray(v).astype(dtype)
        except (TypeError, ValueError) as e:
            raise ShapeError(f"the constant given for input {k!r} is not a {dtype} value: {e}") from None
        if t.HasField("shape"):
            dims = list(t.shape.dim)
            if len(dims) != a.ndim and a.size == 1:
                a = a.reshape([1] * len(dims))
            fixed = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]
            if len(dims) != a.ndim or any(f is not None and f != s for f, s in zip(fixed, a.shape)):
                raise ShapeError(f"the constant given for input {k!r} has shape {a.shape}; the model declares "
                                 f"{tuple(f if f is not None else '?' for f in fixed)}")
        out[k] = a
    return out
