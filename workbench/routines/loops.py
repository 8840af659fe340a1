"""Loop nests of the elementwise kernels: logical broadcasting as per-operand element strides over
the output's physical loop order (:func:`broadcast_loops`), and the innermost two loops made one
row where an operand repeats along it (:func:`periodic_rows`, read through the chain kernel's row
patterns, ``kernels_pyx/eltwise_chain.pyx``).  Pure shape arithmetic."""


def _strides(shape, stored_nhwc):
    """Element strides of a C-contiguous array holding logical ``shape``, in logical axis order."""
    if stored_nhwc:
        n, c, h, w = shape
        return [h * w * c, 1, w * c, c]
    out, step = [], 1
    for d in reversed(shape):
        out.append(step)
        step *= d
    return out[::-1]


def broadcast_loops(out_shape, operands, nhwc, max_loops=4, coalesce=True):
    """Loop dims and per-operand element strides for a broadcasting elementwise op.

    Parameters
    ----------
    out_shape : tuple
        Logical (ONNX order) output shape.
    operands : list of (shape, stored_nhwc) or (shape, stored_nhwc, strides)
        Logical shape of each operand and whether it is stored as (N, H, W, C); ``strides``, its
        element strides in logical axis order, where it is not C-contiguous.
    nhwc : bool
        The output is stored as (N, H, W, C): loops run in that order.
    coalesce : bool
        Merge loops that run on contiguously (False: one loop per axis of the output, whose own
        strides then need not be contiguous either).

    Returns
    -------
    (dims, [strides, ...]) with ``max_loops`` entries each (outermost first), or None when the
    broadcast needs more loops.
    """
    rank = len(out_shape)
    per_op = []
    for shape, stored_nhwc, *given in operands:
        pad = rank - len(shape)
        st = given[0] if given else _strides(shape, stored_nhwc)
        per_op.append([0] * pad + [0 if d == 1 else s for d, s in zip(shape, st)])
    order = [0, 2, 3, 1] if nhwc else list(range(rank))
    dims, loops = [], [[] for _ in operands]
    for axis in order:
        d = out_shape[axis]
        if d == 1 and coalesce:
            continue
        if coalesce and dims and all(lp[-1] == s[axis] * d for lp, s in zip(loops, per_op)):
            dims[-1] *= d
            for lp, s in zip(loops, per_op):
                lp[-1] = s[axis]
        else:
            dims.append(d)
            for lp, s in zip(loops, per_op):
                lp.append(s[axis])
    if len(dims) > max_loops:
        return None
    pad = max_loops - len(dims)
    return [1] * pad + dims, [[0] * pad + lp for lp in loops]


#: The chain kernel's limits on inputs read through a row pattern, and on a periodic one's unit.
MAX_PATTERNS = 4
MAX_PERIOD = 256


def periodic_rows(dims, strides):
    """``(dims, strides, rows)`` with the two innermost loops made one row where some operand
    repeats along the outer of them (stride 0, the inner contiguous and at most MAX_PERIOD long:
    a per-channel operand of an NHWC tensor), every other one running on contiguously or
    broadcast across both; ``rows`` None where nothing is merged."""
    d2, d3 = dims[2], dims[3]
    if d2 == 1 or d3 > MAX_PERIOD:
        return dims, strides, None
    merged, rows = [], []
    for st in strides:
        if st[3] == 1 and st[2] in (0, d3):
            periodic = st[2] == 0
            merged.append([0, st[0], st[1], 0 if periodic else 1])
            rows.append((d3, 0) if periodic else None)
        elif st[2] == st[3] == 0:
            merged.append([0, st[0], st[1], 0])
            rows.append(None)
        else:
            return dims, strides, None
    if not 0 < sum(r is not None for r in rows) <= MAX_PATTERNS:
        return dims, strides, None
    return [1, dims[0], dims[1], d2 * d3], merged, rows
