"""Adapt layers: declared conversions between tensor formats (layout now; dtype and device later).

An :class:`Adapt` converts a tensor from one :class:`~workbench.ir.graph.TensorSpec` format to
another.  :func:`path` finds the cheapest chain of declared adapts between two formats
(shortest path over the formats graph), so a missing direct pair is composed.
"""
from __future__ import annotations

from typing import ClassVar

import networkx as nx
import numpy as np

from ..runtime import cpu
from ..ir.graph import NCHW, NHWC, TensorSpec

_ADAPTS: dict = {}   # (src layout, dst layout, dtype) -> Adapt subclass


def physical_shape(spec: TensorSpec):
    """Shape of the array that holds ``spec`` in memory (NHWC stores (N, H, W, C))."""
    if spec.layout == NHWC and len(spec.shape) == 4:
        n, c, h, w = spec.shape
        return (n, h, w, c)
    return spec.shape


class Adapt:
    src_layout: ClassVar[str] = NCHW
    dst_layout: ClassVar[str] = NCHW
    dtype: ClassVar[str] = "float32"
    name: ClassVar[str] = ""
    #: Writes a 4-D output whose (H, W) planes are each contiguous but lie apart (a slice of a
    #: larger buffer along its flattened spatial axis, :mod:`workbench.runtime.slices`).
    planes_out: ClassVar[bool] = False

    def __init_subclass__(cls, register=True, **kwargs):
        super().__init_subclass__(**kwargs)
        if not register:
            return
        cls.name = cls.__dict__.get("name") or f"{cls.dtype}:{cls.src_layout}->{cls.dst_layout}"
        _ADAPTS[(cls.src_layout, cls.dst_layout, cls.dtype)] = cls

    @classmethod
    def applies(cls, spec: TensorSpec) -> bool:
        return len(spec.shape) == 4 and spec.dtype == cls.dtype

    @classmethod
    def is_view(cls, spec: TensorSpec) -> bool:
        """Whether ``spec`` holds the same bytes in the same order in both layouts, so that the
        executor reinterprets the buffer instead of running the adapt (and it costs nothing)."""
        return False

    @classmethod
    def run(cls, src, dst, num_threads):
        raise NotImplementedError


class _Transpose(Adapt, register=False):
    @classmethod
    def is_view(cls, spec):
        # (N, C, 1, 1), a pooled classifier input, or (N, 1, H, W): nothing moves.
        _, c, h, w = spec.shape
        return c == 1 or h * w == 1


class NchwToNhwc(_Transpose):
    src_layout, dst_layout = NCHW, NHWC

    @classmethod
    def run(cls, src, dst, num_threads):
        cpu.best_module("layout").nchw_to_nhwc(src, dst, num_threads)


class NhwcToNchw(_Transpose):
    src_layout, dst_layout = NHWC, NCHW
    planes_out = True

    @classmethod
    def run(cls, src, dst, num_threads):
        cpu.best_module("layout").nhwc_to_nchw(src, dst, num_threads)


class _CopyAdapt(Adapt):
    """Layouts other than 4-D ones are all the native order: converting them is a copy."""

    @classmethod
    def run(cls, src, dst, num_threads):
        np.copyto(dst, src.reshape(dst.shape))


def path(spec: TensorSpec, dst_layout: str):
    """Adapts converting ``spec`` (in its layout) to ``dst_layout``, cheapest chain first.

    Raises ValueError when no chain exists.
    """
    if spec.layout == dst_layout:
        return []
    g = nx.DiGraph()
    for (src, dst, dtype), adapt in _ADAPTS.items():
        if dtype == spec.dtype and adapt.applies(spec):
            g.add_edge(src, dst, adapt=adapt)
    try:
        nodes = nx.shortest_path(g, spec.layout, dst_layout)
    except (nx.NetworkXNoPath, nx.NodeNotFound):
        raise ValueError(f"no adapt converts {spec} from {spec.layout} to {dst_layout}") from None
    return [g.edges[a, b]["adapt"] for a, b in zip(nodes, nodes[1:])]


def is_view(spec: TensorSpec, dst_layout: str) -> bool:
    """Whether converting ``spec`` (in its layout) to ``dst_layout`` moves no bytes: every adapt
    on the way is a view (the executor shares the buffer; the profiler prices it at zero)."""
    return all(a.is_view(spec) for a in path(spec, dst_layout))
