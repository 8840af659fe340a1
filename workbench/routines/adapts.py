"""Adapt layers: declared conversions between tensor formats (:class:`~workbench.ir.formats.Format`,
a data type and a layout; devices later).

An :class:`Adapt` converts a tensor from its format :attr:`~Adapt.src` to :attr:`~Adapt.dst`.
:func:`path` finds the shortest chain of declared adapts between two formats (over the graph of
formats), so a missing direct pair is composed.  Quantize and dequantize adapts (float32 <->
qint8, held as uint8) read the tensor's quantization parameters, which callers pass to
:meth:`Adapt.run`.
"""
from __future__ import annotations

from typing import ClassVar

import networkx as nx
import numpy as np

from ..runtime import cpu
from ..ir.formats import QUANTIZED, Format
from ..ir.graph import NCHW, NHWC, TensorSpec
from ..ir.quant import per_tensor

_ADAPTS: dict = {}   # (src Format, dst Format) -> Adapt subclass


def physical_shape(spec: TensorSpec):
    """Shape of the array that holds ``spec`` in memory (NHWC stores (N, H, W, C))."""
    if spec.layout == NHWC and len(spec.shape) == 4:
        n, c, h, w = spec.shape
        return (n, h, w, c)
    return spec.shape


class Adapt:
    """Subclasses set ``src_layout``/``dst_layout`` and ``dtype`` (a layout change), or
    ``dst_dtype`` too (a cast, maybe with a layout change); :attr:`src` and :attr:`dst` are the
    formats they make."""

    src_layout: ClassVar[str] = NCHW
    dst_layout: ClassVar[str] = NCHW
    dtype: ClassVar[str] = "float32"
    dst_dtype: ClassVar[str] = ""   # "" for the source's
    name: ClassVar[str] = ""
    src: ClassVar[Format] = None
    dst: ClassVar[Format] = None
    #: Writes a 4-D output whose (H, W) planes are each contiguous but lie apart (a slice of a
    #: larger buffer along its flattened spatial axis, :mod:`workbench.runtime.slices`).
    planes_out: ClassVar[bool] = False
    #: ``(kernel module, function)`` that :meth:`run` calls as ``function(src, dst, num_threads)``
    #: in the best build of the module for this CPU.
    kernel: ClassVar[tuple] = None
    #: Whether :meth:`run` needs the tensor's :class:`~workbench.ir.quant.QuantParams` (a
    #: quantize or dequantize): callers pass them as ``params``.
    quantized: ClassVar[bool] = False

    def __init_subclass__(cls, register=True, **kwargs):
        super().__init_subclass__(**kwargs)
        if not register:
            return
        cls.src = Format(cls.dtype, cls.src_layout)
        cls.dst = Format(cls.dst_dtype or cls.dtype, cls.dst_layout)
        # a layout change keeps the name it had before formats carried a data type (the
        # profile database's records are keyed by it)
        cls.name = cls.__dict__.get("name") or (f"{cls.dtype}:{cls.src_layout}->{cls.dst_layout}" if cls.src.dtype == cls.dst.dtype
                                                 else f"{cls.src}->{cls.dst}")
        _ADAPTS[(cls.src, cls.dst)] = cls

    @classmethod
    def applies(cls, spec: TensorSpec) -> bool:
        return len(spec.shape) == 4

    @classmethod
    def is_view(cls, spec: TensorSpec) -> bool:
        """Whether ``spec`` holds the same bytes in the same order in both layouts, so that the
        executor reinterprets the buffer instead of running the adapt (and it costs nothing)."""
        return False

    @classmethod
    def run(cls, src, dst, num_threads, params=None):
        """Convert ``src`` into ``dst``; ``params``: the tensor's quantization parameters (read
        by :attr:`quantized` adapts only)."""
        module, function = cls.kernel
        getattr(cpu.best_module(module), function)(src, dst, num_threads)


class _Transpose(Adapt, register=False):
    @classmethod
    def is_view(cls, spec):
        # (N, C, 1, 1), a pooled classifier input, or (N, 1, H, W): nothing moves.
        _, c, h, w = spec.shape
        return c == 1 or h * w == 1


class NchwToNhwc(_Transpose):
    src_layout, dst_layout = NCHW, NHWC
    kernel = ("layout", "nchw_to_nhwc")


class NhwcToNchw(_Transpose):
    src_layout, dst_layout = NHWC, NCHW
    planes_out = True
    kernel = ("layout", "nhwc_to_nchw")


class Bf16NchwToNhwc(_Transpose):
    """The transpose on bfloat16 tensors: half the bytes of the float32 one, no cast through it."""
    src_layout, dst_layout, dtype = NCHW, NHWC, "bfloat16"
    kernel = ("cast", "nchw_bf16_to_nhwc_bf16")


class Bf16NhwcToNchw(_Transpose):
    src_layout, dst_layout, dtype = NHWC, NCHW, "bfloat16"
    kernel = ("cast", "nhwc_bf16_to_nchw_bf16")


class _CopyAdapt(Adapt):
    """Layouts other than 4-D ones are all the native order: converting them is a copy."""

    @classmethod
    def run(cls, src, dst, num_threads, params=None):
        np.copyto(dst, src.reshape(dst.shape))


class _Cast(Adapt, register=False):
    """float32 <-> bfloat16 in one layout (any rank: a cast does not care what the axes are)."""

    @classmethod
    def applies(cls, spec):
        return True


class F32ToBf16Nchw(_Cast):
    src_layout = dst_layout = NCHW
    dst_dtype = "bfloat16"
    kernel = ("cast", "f32_to_bf16")


class F32ToBf16Nhwc(F32ToBf16Nchw):
    src_layout = dst_layout = NHWC


class Bf16ToF32Nchw(_Cast):
    src_layout = dst_layout = NCHW
    dtype = "bfloat16"
    dst_dtype = "float32"
    kernel = ("cast", "bf16_to_f32")


class Bf16ToF32Nhwc(Bf16ToF32Nchw):
    src_layout = dst_layout = NHWC


class NchwF32ToNhwcBf16(Adapt):
    """The cast fused with the transpose: one pass over the tensor instead of two."""

    src_layout, dst_layout, dst_dtype = NCHW, NHWC, "bfloat16"
    kernel = ("cast", "nchw_f32_to_nhwc_bf16")


class NhwcBf16ToNchwF32(Adapt):
    src_layout, dst_layout, dtype, dst_dtype = NHWC, NCHW, "bfloat16", "float32"
    kernel = ("cast", "nhwc_bf16_to_nchw_f32")


# -- quantize and dequantize: float32 <-> qint8 (held as uint8) with the tensor's one scale and
# zero point, in either layout and fused with the transpose (one pass where two would do); the
# parameters are the tensor's (the graph's QuantTable), passed to run() by its callers.

#: The kernels' transpose codes (kernels_pyx/quant.pyx).
_TRANSPOSE = {(NCHW, NCHW): 0, (NHWC, NHWC): 0, (NCHW, NHWC): 1, (NHWC, NCHW): 2}


class _Quant(Adapt, register=False):
    quantized = True
    function = ""

    @classmethod
    def applies(cls, spec):
        return cls.src_layout == cls.dst_layout or len(spec.shape) == 4

    @classmethod
    def run(cls, src, dst, num_threads, params=None):
        scale, zero = per_tensor(params, cls.name)
        getattr(cpu.best_module("quant"), cls.function)(
            src, dst, scale, zero, _TRANSPOSE[(cls.src_layout, cls.dst_layout)], num_threads)


class QuantizeNchw(_Quant):
    src_layout = dst_layout = NCHW
    dst_dtype = QUANTIZED
    function = "quantize"


class QuantizeNhwc(QuantizeNchw):
    src_layout = dst_layout = NHWC


class QuantizeNchwToNhwc(QuantizeNchw):
    src_layout, dst_layout = NCHW, NHWC


class DequantizeNchw(_Quant):
    src_layout = dst_layout = NCHW
    dtype, dst_dtype = QUANTIZED, "float32"
    function = "dequantize"


class DequantizeNhwc(DequantizeNchw):
    src_layout = dst_layout = NHWC


class DequantizeNhwcToNchw(DequantizeNchw):
    src_layout, dst_layout = NHWC, NCHW


class _QuantizedTranspose(_Transpose, register=False):
    """The transpose of a quantized tensor: its integers move, its parameters stay.  Plans meet it
    where it is a view (a pooled (N, C, 1, 1) tensor before a Flatten); elsewhere a NumPy copy."""

    dtype = QUANTIZED
    axes = ()

    @classmethod
    def run(cls, src, dst, num_threads, params=None):
        dst[...] = src.transpose(cls.axes)


class QuantizedNchwToNhwc(_QuantizedTranspose):
    src_layout, dst_layout, axes = NCHW, NHWC, (0, 2, 3, 1)


class QuantizedNhwcToNchw(_QuantizedTranspose):
    src_layout, dst_layout, axes = NHWC, NCHW, (0, 3, 1, 2)


class Chain:
    """A :func:`path` of several adapts run as one conversion of ``spec`` (how the profiler
    prices a pair that no single adapt converts: the whole chain, its intermediate buffers
    allocated once)."""

    def __init__(self, hops, spec: TensorSpec):
        self.hops = list(hops)
        self.src, self.dst = self.hops[0].src, self.hops[-1].dst
        self.name = "+".join(a.name for a in self.hops)
        self._between = [np.empty(physical_shape(spec.with_format(a.dst)), np.dtype(a.dst.dtype)) for a in self.hops[:-1]]

    def is_view(self, spec):
        return all(a.is_view(spec) for a in self.hops)

    @property
    def quantized(self):
        return any(a.quantized for a in self.hops)

    def run(self, src, dst, num_threads, params=None):
        for a, out in zip(self.hops, self._between + [dst]):
            a.run(src, out, num_threads, params)
            src = out


def path(spec: TensorSpec, dst: Format):
    """Adapts converting ``spec`` (in its format) to ``dst``, the shortest chain.

    Raises ValueError when no chain exists.
    """
    src = spec.format
    if src == dst:
        return []
    g = nx.DiGraph()
    for (a, b), adapt in _ADAPTS.items():
        if adapt.applies(spec):
            g.add_edge(a, b, adapt=adapt)
    try:
        nodes = nx.shortest_path(g, src, dst)
    except (nx.NetworkXNoPath, nx.NodeNotFound):
        raise ValueError(f"no adapt converts {spec} from {src} to {dst}") from None
    return [g.edges[a, b]["adapt"] for a, b in zip(nodes, nodes[1:])]


def is_view(spec: TensorSpec, dst: Format) -> bool:
    """Whether converting ``spec`` (in its format) to ``dst`` moves no bytes: every adapt on the
    way is a view (the executor shares the buffer; the profiler prices it at zero)."""
    return all(a.is_view(spec) for a in path(spec, dst))


def step_name(tensor, adapt):
    """The executor's name for ``adapt`` on ``tensor`` (``adapt:<tensor>:<src>-><dst>``)."""
    return f"adapt:{tensor}:{adapt.src}->{adapt.dst}"


def steps_of(tensor, spec, src, dst):
    """The names of the steps the executor runs to convert ``tensor`` (of ``spec``) from ``src``
    to ``dst``: one per adapt on the way, none for one that only reinterprets the bytes (a view)."""
    return [step_name(tensor, a) for a in path(spec.with_format(src), dst) if not a.is_view(spec)]


def parse_step_name(name):
    """``(tensor, src Format, dst Format)`` of a :func:`step_name` (tensor names may hold ':')."""
    head, _, dst = name[len("adapt:"):].rpartition("->")
    tensor, dtype, layout = head.rsplit(":", 2)
    return tensor, Format(dtype, layout), Format.parse(dst)
