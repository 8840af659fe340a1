"""Winograd Conv routines for 3x3, stride-1 convolutions: ``cpu:float32:{nchw,nhwc}/winograd2``
(F(2x2,3x3)) and ``cpu:float32:{nchw,nhwc}/winograd4`` (F(4x4,3x3)).

Weights are transformed once in :meth:`prepare` (U = G g G^T, computed in float64 and rounded
once); the input tile transform, the (m+2)^2 transform-domain GEMMs and the output transform
with the fused epilogue run in ``kernels_pyx/winograd.pyx``.

Accuracy.  Winograd trades multiplications for transforms whose rounding errors grow with the
tile.  Measured as max |ours - ref| / max |ref| against a float64 reference (worst of NCHW and
NHWC, which agree to within 15%):

===============================================  ==========  ==========
layers                                           F(2x2,3x3)  F(4x4,3x3)
===============================================  ==========  ==========
1000 hypothesis layers (test_conv_winograd.py)   1.4e-5      1.3e-4
ResNet-50 3x3 stride-1 layers, 224x224, N(0,1)   5.7e-7      7.3e-6
VGG-16 3x3 stride-1 layers, 224x224, N(0,1)      7.0e-7      1.5e-5
===============================================  ==========  ==========

The worst hypothesis layers end in a saturating activation (Clip, Tanh): the error of the
pre-activation values, ~10x larger, is then measured against a small max |out|; with other
activations F4 stayed below 1e-5.  F2 (points 0, +-1, inf) meets the project's 1e-4 bound with
7x margin.  F4 (Lavin & Gray's points 0, +-1, +-2, inf: entries up to 8 in A^T, 5 in B^T) does
not always, so it gets its own bound, :data:`RTOL`: 5e-4, 4x over the worst measurement and
30x over the real networks' layers.
"""
from __future__ import annotations

import numpy as np

from ..runtime import cpu
from ..runtime.blas import SerialBlas
from ..ir.graph import NCHW, NHWC
from ..ir.ops.conv import residual_after_activation
from . import Routine
from .epilogue import encode

#: Stated relative error bounds (max |ours - ref| / max |ref|) by tile size m.
RTOL = {2: 1e-4, 4: 5e-4}

# Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (2016): F(2,3) and F(4,3).
G_MAT = {
    2: np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]]),
    4: np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                 [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]),
}


def transform_weights(w, m):
    """U[(a, b)] = (G g G^T)[a, b] as ((m+2)^2, M, C) float32, for weights ``w`` (M, C, 3, 3)."""
    g = G_MAT[m]
    u = np.einsum("ai,mcij,bj->abmc", g, np.asarray(w, np.float64), g)
    return np.ascontiguousarray(u.reshape((m + 2) ** 2, w.shape[0], w.shape[1]), np.float32)


def winograd_applies(layer, specs):
    """Whether ``layer`` is a float32 3x3, stride-1, dilation-1, group-1 Conv on 4-D data."""
    a = layer.attrs
    x, w = specs[0], layer.const(1)
    if (layer.op != "Conv" or w is None or x is None or len(x.shape) != 4 or x.dtype != "float32"
            or w.dtype != np.float32 or layer.out_specs[0].dtype != "float32"):
        return False
    if (a["group"] != 1 or list(a["kernel_shape"]) != [3, 3] or list(a["strides"]) != [1, 1]
            or list(a["dilations"]) != [1, 1] or min(a["pads"]) < 0 or w.shape[1] != x.shape[1]):
        return False
    if len(layer.inputs) > 2 and layer.inputs[2] and layer.const(2) is None:
        return False
    if a.get("residual") and (len(specs) < 4 or specs[3] is None or specs[3].dtype != "float32"):
        return False
    return encode(layer, w.shape[0], extended=True) is not None


def _all_finite(x):
    """Whether ``x`` holds no NaN or infinity: one pass over its bits (10 us on a 56x56x64
    input, 2 us on 14x14x256, against ~300 us for the layer)."""
    global _finite_check
    if _finite_check is None:
        mods = [cpu.kernel_module("layout", isa) for isa in ("avx512", "avx2", None)]
        _finite_check = next((m.all_finite for m in mods if m is not None and hasattr(m, "all_finite")),
                             lambda a: bool(np.isfinite(a).all()))
    return _finite_check(x) if x.flags.c_contiguous else bool(np.isfinite(x).all())


_finite_check = None


def plan(m, n, c, h, w, mo, num_threads, nhwc=False):
    """(tile rows per block, parallel mode) for a layer with output ``h`` x ``w``.

    From measurements on ResNet-50's and VGG-16's layers (2 threads).  NCHW: the whole layer at
    once in mode 0 while its transform-domain data (V and Mo) stays under ~12 MB for F4, ~20 MB
    for F2 (whose GEMMs gain more from size); beyond that, blocks of ~4 MB in mode 0 for wide
    layers (C + M > 256: the stage-parallel GEMMs are bigger), or blocks of ~3.5 MB per thread
    in mode 1 for narrow ones (the 224x224 and 112x112 layers).  NHWC: narrow layers in mode 1
    with blocks of up to 8 tile rows (~6 MB), at least one block per thread; wide ones whole
    up to 32 MB.
    """
    tw, th = -(-w // m), -(-h // m)
    per_row = (m + 2) ** 2 * (c + mo) * 4 * tw      # bytes of V and Mo per tile row
    narrow = c + mo <= 256 and num_threads > 1
    if nhwc and narrow:
        return min(max(1, (6 << 20) // per_row), 8, -(-n * th // num_threads)), 1
    if per_row * n * th <= (32 << 20 if nhwc else 20 << 20 if m == 2 else 12 << 20):
        return n * th, 0
    if not narrow:
        return max(1, (4 << 20) // per_row), 0
    return max(1, (7 << 19) // per_row), 1


def _whole_lines(floats):
    return -(-floats // 16) * 16


def _carve(workspace, sizes, who):
    """float32 arrays of ``sizes`` one after another in ``workspace``, each from a cache line (new
    arrays where there is none)."""
    if workspace is None:
        return [np.empty(s, np.float32) for s in sizes]
    if workspace.nbytes < sum(4 * _whole_lines(s) for s in sizes):
        raise ValueError(f"{who}: a workspace of {workspace.nbytes} bytes; this run needs "
                         f"{sum(4 * _whole_lines(s) for s in sizes)}")
    out, at = [], 0
    for s in sizes:
        out.append(workspace[at: at + 4 * s].view(np.float32))
        at += 4 * _whole_lines(s)
    return out


class _Winograd(Routine, register=False):
    """The Winograd routine; subclasses on another GEMM (``conv_winograd512``) override the
    hooks :meth:`kernels`, :meth:`pack`, :meth:`tile_plan` and :meth:`call`."""

    op = "Conv"
    m = 2
    priority = 5

    @classmethod
    def kernels(cls):
        """The kernel module (``nchw``/``nhwc``/``scratch_floats``), or None where unavailable."""
        return cpu.kernel_module("winograd")

    @classmethod
    def pack(cls, k, u):
        """Transformed weights, (A2, M, C) for NCHW or (A2, C, M) for NHWC, as the kernel takes them."""
        return u

    @classmethod
    def tile_plan(cls, n, c, h, w, mo, num_threads):
        return plan(cls.m, n, c, h, w, mo, num_threads, cls.layout == NHWC)

    @classmethod
    def call(cls, kernel, *args, **kwargs):
        with SerialBlas():
            kernel(*args, **kwargs)

    @classmethod
    def applies(cls, layer, specs):
        return cls.kernels() is not None and winograd_applies(layer, specs)

    @classmethod
    def prepare(cls, layer):
        w = layer.const(1)
        b = layer.const(2) if len(layer.inputs) > 2 else None
        u = transform_weights(w, cls.m)
        u = np.ascontiguousarray(u.transpose(0, 2, 1)) if cls.layout == NHWC else u
        return {"U": cls.pack(cls.kernels(), u), "ep": encode(layer, w.shape[0], extended=True),
                "bias": np.ascontiguousarray(b if b is not None else np.zeros(w.shape[0]), np.float32),
                "scratch": {}, "plan": None}

    @classmethod
    def workspace(cls, layer, specs, num_threads):
        # V, Mo and the per-thread tiles, each from a cache line, for any thread count up to num_threads
        n, c, h, w = specs[0].shape
        _, mo, oh, ow = layer.out_specs[0].shape
        need = 0
        for t in range(1, num_threads + 1):
            rows, mode = cls.tile_plan(n, c, oh, ow, mo, t)
            sizes = cls.kernels().scratch_floats(cls.m, n, c, h, w, mo, layer.attrs["pads"], rows, mode, t,
                                                 cls.layout == NHWC)
            need = max(need, sum(4 * _whole_lines(s) for s in sizes))
        return need

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        if not _all_finite(args[0]):
            return cls._exact(layer, state, args, outs, num_threads)
        x, out, ep, a = args[0], outs[0], state["ep"], layer.attrs
        k = cls.kernels()
        nhwc = cls.layout == NHWC
        (n, h, w, c), mo = (x.shape, out.shape[3]) if nhwc else ((x.shape[0], *x.shape[2:], x.shape[1]), out.shape[1])
        oh, ow = (out.shape[1], out.shape[2]) if nhwc else out.shape[2:]
        rows, mode = state["plan"] or cls.tile_plan(n, c, oh, ow, mo, num_threads)
        key = (x.shape, rows, mode, num_threads)
        if key not in state["scratch"]:
            sizes = k.scratch_floats(cls.m, n, c, h, w, mo, a["pads"], rows, mode, num_threads, nhwc)
            state["scratch"] = {key: _carve(state.get("workspace"), sizes, cls.descriptor)}
        cls.call(k.nhwc if nhwc else k.nchw,
                 x, state["U"], state["bias"], out, *state["scratch"][key], cls.m, a["pads"],
                 residual=args[3] if a.get("residual") else None, act=ep.code, p0=ep.p0, p1=ep.p1,
                 slope=ep.slope, rows=rows, mode=mode, num_threads=num_threads,
                 res_post=residual_after_activation(layer))


    @classmethod
    def _exact(cls, layer, state, args, outs, num_threads):
        """The layer by im2col, for an input holding NaN or infinity: the transforms add and
        subtract inputs across a whole tile (inf - inf is NaN), so a NaN or an infinity would
        reach outputs whose window never saw it and turn infinities into NaN, where ONNX
        Runtime's direct GEMM gives each output its own window's result."""
        from .conv_gemm import NchwIm2col, NhwcIm2col
        exact = NhwcIm2col if cls.layout == NHWC else NchwIm2col
        if state.get("exact") is None:
            state["exact"] = exact.prepare(layer)   # once, on the first non-finite input
        if outs[0].flags.c_contiguous:
            exact.run(layer, state["exact"], args, outs, num_threads)
        else:   # a Concat's part (strided_out): im2col writes whole pixels
            out = np.empty(outs[0].shape, np.float32)
            exact.run(layer, state["exact"], args, [out], num_threads)
            np.copyto(outs[0], out)

class _Winograd4(_Winograd, register=False):
    m, priority = 4, 12   # measured fastest on 3x3 stride-1 at 56x56 and 28x28 outputs
    #: Output pixels below which im2col on our SGEMM is measured faster (the 4x4 tiles of a
    #: small output are few and ragged): 14x14 in NHWC, 7x7 in NCHW.
    min_pixels = 28 * 28

    @classmethod
    def preference(cls, layer, specs):
        out = layer.out_specs[0].shape
        return cls.priority if out[2] * out[3] >= cls.min_pixels else 10.5


class Winograd2(_Winograd):
    algo, m, layout = "winograd2", 2, NCHW


class Winograd4(_Winograd4):
    algo, layout, min_pixels = "winograd4", NCHW, 14 * 14


class Winograd2NHWC(_Winograd):
    algo, m, layout = "winograd2", 2, NHWC


class Winograd4NHWC(_Winograd4):
    algo, layout = "winograd4", NHWC
