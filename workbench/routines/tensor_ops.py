"""Data-movement layers: Concat, Split, Resize, Pad, Slice and the reshape-like copies
(Softmax is in ``softmax.py``, Transpose in ``transpose.py``).

- ``{nchw,nhwc}/copy``: Concat and Split as row-block copies along the concatenated axis in the
  *physical* order (NHWC: logical axis 1 is the last physical axis); constants are stored in the
  routine's layout once, in :meth:`prepare`.
- ``nchw/view`` and ``nchw/copy``: Flatten, Reshape, Squeeze, Unsqueeze, Identity, Dropout as a
  view of the input's buffer (no work at all in the compiled executor), or as a parallel copy
  (channels-first only: a 4-D NHWC tensor is adapted first, so its inputs stay NCHW).
- ``{nchw,nhwc}/gather``: Pad (every mode), Slice and nearest Resize as index-table gathers;
  ``{nchw,nhwc}/bilinear``: linear Resize.  The tables come from the reference's own functions
  (``np.pad`` of an index range, ``Resize.source_coords``/``nearest_index``), so the semantics
  cannot drift; they depend on the input shape, which :meth:`prepare` does not see, so they are
  built on the first run of each input shape.
"""
import numpy as np

from ..ir.graph import NCHW, NHWC
from ..ir.ops.resize import Resize
from ..ir.ops.tensor import Pad, Slice
from . import Routine
from .eltwise import all_float32, as_stored, kernels, memo

#: Logical (NCHW) axis -> physical axis of a 4-D NHWC array.
NHWC_AXIS = (0, 3, 1, 2)
#: Physical NHWC axis -> logical axis.
NHWC_ORDER = (0, 2, 3, 1)


def _physical_axis(axis, rank, layout):
    axis %= rank
    return NHWC_AXIS[axis] if layout == NHWC and rank == 4 else axis


def _layout_ok(cls, specs, layer):
    """NHWC variants take 4-D float32 tensors only (the layout adapts are 4-D float32 ones)."""
    specs = [s for s in specs if s is not None]
    return cls.layout == NCHW or (all(len(s.shape) == 4 for s in specs + list(layer.out_specs))
                                  and all_float32(specs, layer.out_specs))


class _Blocks(Routine, register=False):
    """Concat and Split: rows of ``outer`` blocks along the physical axis.  In a compiled model
    parts may already be in place (:mod:`workbench.runtime.slices`): those are not copied."""

    uses_blas = False
    op = ("Concat", "Split")
    algo = "copy"
    priority = 10
    strided_in = strided_out = True
    # Rows of the whole up to this many elements are filled from every part in one pass
    # (``interleave``); longer ones are copied part by part (``copy_blocks``).
    SHORT_ROW = 4096

    @classmethod
    def applies(cls, layer, specs):
        specs = [s for s in specs if s is not None]
        dtypes = {s.dtype for s in specs + list(layer.out_specs)}
        return len(dtypes) == 1 and _layout_ok(cls, specs, layer) and all(s.size > 0 for s in layer.out_specs)

    @classmethod
    def prepare(cls, layer):
        return {i: as_stored(v, cls.layout == NHWC) if np.asarray(v).dtype == np.float32 else np.ascontiguousarray(v)
                for i, v in layer.consts.items()}

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        copy = kernels("tensor_ops").copy_blocks
        parts = [state.get(i, a) for i, a in enumerate(args) if a is not None] if layer.op == "Concat" else outs
        whole = outs[0] if layer.op == "Concat" else args[0]
        axis = _physical_axis(layer.attrs["axis"], whole.ndim, cls.layout)
        outer = int(np.prod(whole.shape[:axis], dtype=np.int64))
        inner = int(np.prod(whole.shape[axis + 1:], dtype=np.int64))
        ld, offset = whole.shape[axis] * inner, 0
        if ld <= cls.SHORT_ROW and outer >= 64 and len(parts) <= 64:
            kernels("tensor_ops").interleave(parts, whole, outer, [p.shape[axis] * inner for p in parts],
                                             layer.op == "Split", num_threads)
            return
        for part in parts:
            width = part.shape[axis] * inner
            if layer.op == "Concat":
                copy(part, whole, outer, width, width, 0, ld, offset, num_threads)
            else:
                copy(whole, part, outer, width, ld, offset, width, 0, num_threads)
            offset += width

    @classmethod
    def bind(cls, layer, state, args, outs):
        concat = layer.op == "Concat"
        parts = [state.get(i, a) for i, a in enumerate(args) if a is not None] if concat else list(outs)
        whole = outs[0] if concat else args[0]
        axis = _physical_axis(layer.attrs["axis"], whole.ndim, cls.layout)
        index, start, todo = [slice(None)] * whole.ndim, 0, []
        for p in parts:
            index[axis] = slice(start, start + p.shape[axis])
            place = whole[tuple(index)]
            if not _same(p, place):
                todo.append((p, place, start))
            start += p.shape[axis]
        if not todo:
            return lambda num_threads: None
        flat = whole.flags.c_contiguous and all(p.flags.c_contiguous for p, _, _ in todo)
        if len(todo) == len(parts) and flat:
            return lambda num_threads: cls.run(layer, state, args, outs, num_threads)
        copy = kernels("tensor_ops").copy_blocks
        outer = int(np.prod(whole.shape[:axis], dtype=np.int64))
        inner = int(np.prod(whole.shape[axis + 1:], dtype=np.int64))
        ld = whole.shape[axis] * inner
        calls = []
        for p, place, offset in todo:   # rows of the whole's own buffer where it is flat
            width = p.shape[axis] * inner
            if flat and concat:
                calls.append(lambda nt, p=p, w=width, o=offset * inner: copy(p, whole, outer, w, w, 0, ld, o, nt))
            elif flat:
                calls.append(lambda nt, p=p, w=width, o=offset * inner: copy(whole, p, outer, w, ld, o, w, 0, nt))
            else:
                calls.append(_rows_copy(p, place) if concat else _rows_copy(place, p))

        def run(num_threads):
            for call in calls:
                call(num_threads)
        return run


def _rows_copy(src, dst):
    """``dst[...] = src`` as a callable of ``num_threads``: by the gather kernel where both are
    4-D float32 arrays of evenly spaced rows (channel slices: a Split of a tensor that sits in
    a Concat's buffer), a row copy per pixel on the pool; else NumPy's copy."""
    if src.ndim == 4 and src.dtype == dst.dtype == np.float32:
        try:
            tables = [np.arange(n, dtype=np.int32) for n in dst.shape]
            return kernels("tensor_ops").Gather4(src, dst, tables)
        except ValueError:
            pass
    return lambda num_threads: np.copyto(dst, src)


def _same(a, b):
    """``a`` and ``b`` are the same elements of the same buffer."""
    return a.ctypes.data == b.ctypes.data and a.shape == b.shape and a.strides == b.strides


class BlocksNchw(_Blocks):
    layout = NCHW


class BlocksNhwc(_Blocks):
    layout = NHWC


class CopyNchw(Routine):
    """Reshape-like ops: the output is the input's elements in the same order."""

    uses_blas = False
    op = ("Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Dropout")
    layout = NCHW
    algo = "copy"
    priority = 10

    @classmethod
    def applies(cls, layer, specs):
        return len(layer.outputs) == 1 and specs[0].dtype == layer.out_specs[0].dtype and 0 not in layer.consts

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        x, y = args[0], outs[0]
        kernels("tensor_ops").copy_blocks(x, y, 1, x.size, x.size, 0, y.size, 0, num_threads)


class ViewNchw(CopyNchw):
    """The reshape-like ops as views: the executor gives the output no buffer of its own (it is
    the input's, reinterpreted) and skips :meth:`run`; run directly, on separate buffers, it copies."""

    algo = "view"
    priority = 20
    view_of_input = 0

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        if not np.may_share_memory(args[0], outs[0]):
            super().run(layer, state, args, outs, num_threads)


# -- gathers: Pad, Slice, nearest Resize; bilinear Resize -------------------------------------------------
def _to4(tables):
    """Pad a list of per-axis tables to four axes with leading one-entry tables."""
    return [np.zeros(1, np.int32)] * (4 - len(tables)) + [np.ascontiguousarray(t, np.int32) for t in tables]


def pad_tables(layer, shape):
    """Per logical axis, the source index of every output position (-1: the constant)."""
    widths = Pad._widths(layer, len(shape))
    mode = layer.attrs["mode"]
    tables = []
    for size, (b, e) in zip(shape, widths):
        idx = np.arange(size)[max(-b, 0): size - max(-e, 0)]
        b, e = max(b, 0), max(e, 0)
        if mode == "constant":
            tables.append(np.pad(idx, (b, e), constant_values=-1))
        else:
            tables.append(np.pad(idx, (b, e), mode=mode))
    return tables


def slice_tables(layer, shape):
    """Per axis, the source index of every output position of the reference's slice."""
    index = Slice._index(layer, shape)
    return [np.arange(size)[i] for size, i in zip(shape, index)]


def resize_tables(layer, shape):
    """Per spatial axis (lo, hi, weight), from the reference's coordinate functions."""
    a = layer.attrs
    copy = tuple(a["sizes"]) == tuple(shape)
    out = []
    for axis in (2, 3):
        in_len, out_len, scale = shape[axis], a["sizes"][axis], a["scales"][axis]
        if copy or (out_len == in_len and scale == 1.0):
            idx = np.arange(in_len)
            out.append((idx, idx, np.zeros(in_len, np.float32)))
            continue
        coords = Resize.source_coords(a["coordinate_transformation_mode"], out_len, in_len, scale)
        if a["mode"] == "nearest":
            idx = Resize.nearest_index(coords, a["nearest_mode"], in_len, scale)
            out.append((idx, idx, np.zeros(out_len, np.float32)))
            continue
        coords = np.clip(coords, 0, in_len - 1)
        lo = np.floor(coords).astype(np.int64)
        out.append((lo, np.minimum(lo + 1, in_len - 1), (coords - lo).astype(np.float32)))
    as32 = np.ascontiguousarray
    return [(as32(lo, np.int32), as32(hi, np.int32), as32(w, np.float32)) for lo, hi, w in out]


def _resize_ok(layer, shape):
    a = layer.attrs
    copy = tuple(a["sizes"]) == tuple(shape)
    # Batch and channel axes untouched (a scale != 1 there resamples them even at the same size).
    same_nc = a["scales"][0] == a["scales"][1] == 1.0 and list(a["sizes"][:2]) == list(shape[:2])
    return len(shape) == 4 and (copy or same_nc)


def block_plan(tables, shape):
    """``(outer, width, src_ld, src_offset)`` when the gather of ``tables`` (per axis of ``shape``,
    the source index of each output position) reads ``outer`` runs of ``width`` consecutive
    elements, ``src_ld`` apart from ``src_offset`` on (a Slice of unit steps whose leading axes
    are whole or single); None otherwise."""
    starts, partial = [], []
    for t, size in zip(tables, shape):
        t = np.asarray(t)
        if len(t) == 0 or t[0] < 0 or (len(t) > 1 and not np.array_equal(np.diff(t), np.ones(len(t) - 1))):
            return None
        starts.append(int(t[0]))
        partial.append(len(t) != size)
    strides = [int(np.prod(shape[a + 1:], dtype=np.int64)) for a in range(len(shape))]
    p = max((a for a, f in enumerate(partial) if f), default=0)
    q = p
    while q > 0 and not partial[q - 1]:
        q -= 1   # the whole axes just before p: the runs' outer loop
    if any(len(tables[a]) != 1 for a in range(q)):
        return None
    offset = sum(starts[a] * strides[a] for a in range(p + 1))
    outer = int(np.prod([len(tables[a]) for a in range(q, p)], dtype=np.int64))
    width = len(tables[p]) * strides[p]
    return outer, width, strides[p - 1] if p > 0 else width, offset


class _Gather(Routine, register=False):
    uses_blas = False
    op = ("Pad", "Slice", "Resize", "Upsample")
    algo = "gather"
    priority = 10
    strided_in = strided_out = True   # gather4 reads and writes rows where told (an upsample into a Concat)

    @classmethod
    def applies(cls, layer, specs):
        shape = specs[0].shape
        if not (all_float32(specs[:1], layer.out_specs) and _layout_ok(cls, specs[:1], layer)) or len(shape) > 4:
            return False
        if layer.op in ("Resize", "Upsample"):
            return layer.attrs["mode"] == "nearest" and _resize_ok(layer, shape)
        if layer.op == "Pad":
            try:
                pad_tables(layer, shape)
            except (ValueError, IndexError):
                return False   # e.g. reflecting an axis cropped to nothing: the reference raises too
        return True

    @classmethod
    def prepare(cls, layer):
        return {}

    @classmethod
    def _tables(cls, layer, shape):
        if layer.op == "Pad":
            tables = pad_tables(layer, shape)
        elif layer.op == "Slice":
            tables = slice_tables(layer, shape)
        else:
            (hl, _, _), (wl, _, _) = resize_tables(layer, shape)
            tables = [np.arange(shape[0]), np.arange(shape[1]), hl, wl]
        if cls.layout == NHWC:
            tables = [tables[i] for i in NHWC_ORDER]
        return _to4(tables)

    @classmethod
    def _call(cls, layer, state, args, outs):
        """``(kernel, arguments before num_threads, bound)``: a block copy for a Slice that reads
        runs of consecutive elements (a memcpy per run, several times faster than a gather of
        every element through its tables), else the gather."""
        x, y = args[0], outs[0]
        logical = (x.shape[0], x.shape[3], x.shape[1], x.shape[2]) if cls.layout == NHWC else x.shape
        tables = memo(state, x.shape, lambda: cls._tables(layer, logical))
        fill = np.float32(layer.attrs.get("value", 0.0)) if layer.op == "Pad" else 0.0
        x4 = x.reshape((1,) * (4 - x.ndim) + x.shape)
        y4 = y.reshape((1,) * (4 - y.ndim) + y.shape)
        k = kernels("tensor_ops")
        blocks = memo(state, ("blocks", x.shape), lambda: block_plan(tables, x4.shape) or ()) if layer.op == "Slice" else ()
        if blocks and x4.flags.c_contiguous and y4.flags.c_contiguous:
            outer, width, ld, offset = blocks
            return k.copy_blocks, (x4, y4, outer, width, ld, offset, width, 0), None
        return k.gather4, (x4, y4, tables, fill), k.Gather4

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        kernel, call_args, _ = cls._call(layer, state, args, outs)
        kernel(*call_args, num_threads)

    @classmethod
    def bind(cls, layer, state, args, outs):
        kernel, call_args, bound = cls._call(layer, state, args, outs)
        return bound(*call_args) if bound is not None else None


class GatherNchw(_Gather):
    layout = NCHW


class GatherNhwc(_Gather):
    layout = NHWC


class _Bilinear(Routine, register=False):
    uses_blas = False
    op = ("Resize", "Upsample")
    algo = "bilinear"
    priority = 10

    @classmethod
    def applies(cls, layer, specs):
        return (layer.attrs["mode"] == "linear" and all_float32(specs[:1], layer.out_specs)
                and _layout_ok(cls, specs[:1], layer) and _resize_ok(layer, specs[0].shape))

    @classmethod
    def prepare(cls, layer):
        return {}

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        x = args[0]
        logical = (x.shape[0], x.shape[3], x.shape[1], x.shape[2]) if cls.layout == NHWC else x.shape
        h, w = memo(state, x.shape, lambda: resize_tables(layer, logical))
        kernels("resize_lerp").lerp2d(x, outs[0], cls.layout == NHWC, h, w, num_threads)


class BilinearNchw(_Bilinear):
    layout = NCHW


class BilinearNhwc(_Bilinear):
    layout = NHWC
