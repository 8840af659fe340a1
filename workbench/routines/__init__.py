"""The routine registry: every concrete way of computing a layer, named by a descriptor.

A descriptor is ``DEVICE:DTYPE:LAYOUT/ALGO``, e.g. ``cpu:float32:nhwc/im2col``; together with
the op it implements it identifies a routine everywhere (plans, profiles, UI, CLI).  A routine
is a :class:`Routine` subclass in one of this package's modules; defining the class registers
it, and every module here is imported by :func:`load_all`, so adding a routine touches only
its own module.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import ClassVar

import numpy as np

from .._kernels.buffers import aligned_empty
from ..ir.formats import Format, storage
from ..ir.graph import NCHW

_REGISTRY: dict = {}   # op -> {descriptor: Routine subclass}

#: The data types tuning considers unless told otherwise: lower precisions change the results,
#: so a user asks for them (``Session.tune(precisions=...)``, ``workbench tune --precision``).
FLOAT32_ONLY = ("float32",)
_loaded = False


def parse_descriptor(descriptor: str):
    """``'cpu:float32:nhwc/im2col'`` -> ``('cpu', 'float32', 'nhwc', 'im2col')``; ValueError if malformed."""
    try:
        head, algo = descriptor.split("/", 1)
        device, dtype, layout = head.split(":")
    except ValueError:
        raise ValueError(f"malformed routine descriptor {descriptor!r}: expected DEVICE:DTYPE:LAYOUT/ALGO, "
                         f"e.g. cpu:float32:nhwc/im2col") from None
    if not all((device, dtype, layout, algo)):
        raise ValueError(f"malformed routine descriptor {descriptor!r}: an empty part")
    return device, dtype, layout, algo


class Routine:
    """One way of computing one op.

    Subclasses set ``op``, ``layout`` and ``algo`` (and ``device``/``dtype`` when not cpu/float32)
    and implement :meth:`applies` and :meth:`run`; :meth:`prepare` when weights need packing.
    """

    op: ClassVar[str] = ""
    device: ClassVar[str] = "cpu"
    dtype: ClassVar[str] = "float32"
    layout: ClassVar[str] = NCHW
    algo: ClassVar[str] = ""
    #: Preference when no measurement says otherwise (higher first); the reference is lowest.
    priority: ClassVar[float] = 0
    #: When set, output 0 is input ``view_of_input`` reinterpreted with the output's shape (a
    #: reshape of a contiguous buffer): the executor gives it no buffer and skips ``run``.
    view_of_input: ClassVar = None
    #: Whether :meth:`run` may call the BLAS (NumPy's matmul, SciPy's): a compiled model whose
    #: routines all say no skips holding the BLAS at one thread for its runs, a cost of every run.
    #: True unless a routine is known to run only our own kernels and BLAS-free NumPy.
    uses_blas: ClassVar[bool] = True
    #: Writes its 4-D outputs (``strided_out``) or reads its 4-D inputs (``strided_in``) as slices
    #: of a larger buffer along the last physical axis (evenly spaced rows, the last axis
    #: contiguous): a compiled model then lets it write Concat parts in place, or read Split
    #: outputs and such parts as views (:mod:`workbench.runtime.slices`).
    strided_out: ClassVar[bool] = False
    strided_in: ClassVar[bool] = False
    descriptor: ClassVar[str] = ""
    #: The variance of its rounding error, in units of a direct routine's of its data type (one
    #: rounding of input, weights and output): more where transforms mix many operands into
    #: each rounded one (:func:`workbench.tuning.precision.rounding_layers`).
    error_weight: ClassVar[float] = 1.0

    def __init_subclass__(cls, register=True, **kwargs):
        super().__init_subclass__(**kwargs)
        if not register:
            return
        cls.descriptor = f"{cls.device}:{cls.dtype}:{cls.layout}/{cls.algo}"
        parse_descriptor(cls.descriptor)
        ops = cls.op if isinstance(cls.op, tuple) else (cls.op,)
        for op in ops:
            table = _REGISTRY.setdefault(op, {})
            if cls.descriptor in table and table[cls.descriptor].__qualname__ != cls.__qualname__:
                raise ValueError(f"two routines for {op} named {cls.descriptor}: "
                                 f"{table[cls.descriptor].__qualname__} and {cls.__qualname__}")
            table[cls.descriptor] = cls

    #: Whether :meth:`prepare` takes the graph's quantization parameters too, as
    #: ``prepare(layer, quant)`` (a :class:`~workbench.ir.quant.QuantTable`): qint8 routines,
    #: whose integers mean what the tensors' scales and zero points say.
    quantized: ClassVar[bool] = False
    #: What the routine needs of the machine beyond the baseline build, said when it is missing.
    requires: ClassVar[str] = ""

    # -- what it accepts -------------------------------------------------------------------
    @classmethod
    def available(cls) -> bool:
        """Whether this machine and build can run the routine at all (:attr:`requires`)."""
        return True

    @classmethod
    def applies(cls, layer, specs) -> bool:
        """Pure, cheap: can this routine compute ``layer`` with inputs of ``specs``?"""
        return False

    @classmethod
    def input_layouts(cls, layer, specs):
        """Layout each input must arrive in: this routine's layout for 4-D activations, else NCHW."""
        return [cls.layout if s is not None and len(s.shape) == 4 and i not in layer.consts else NCHW
                for i, s in enumerate(specs)]

    @classmethod
    def output_layouts(cls, layer):
        return [cls.layout if len(s.shape) == 4 else NCHW for s in layer.out_specs]

    @classmethod
    def input_formats(cls, layer, specs):
        """The :class:`~workbench.ir.formats.Format` each input must arrive in (None for an
        omitted one): :meth:`input_layouts` in this routine's data type for float tensors, their
        own type for the others (indices, shapes)."""
        return [None if s is None else Format(cls._dtype_of(s), lay)
                for s, lay in zip(specs, cls.input_layouts(layer, specs))]

    @classmethod
    def output_formats(cls, layer):
        """The :class:`~workbench.ir.formats.Format` each output is written in."""
        return [Format(cls._dtype_of(s), lay) for s, lay in zip(layer.out_specs, cls.output_layouts(layer))]

    @classmethod
    def _dtype_of(cls, spec):
        return storage(cls.dtype) if np.dtype(spec.dtype).kind == "f" else spec.dtype

    @classmethod
    def reads_strided(cls, layer, index):
        """Whether input ``index`` may be such a slice (:attr:`strided_in`; a routine whose
        kernels take only some inputs so says here)."""
        return cls.strided_in

    @classmethod
    def in_place_input(cls, layer):
        """Index of an input that :meth:`run` may be given as the output buffer itself (a fused
        residual the kernel adds onto in place), or None.  The executor does so only where that
        input has the output's shape and layout and nothing reads it afterwards."""
        return None

    @classmethod
    def preference(cls, layer, specs):
        """Default rank among the routines that apply to ``layer`` (higher first), for when no
        profile says otherwise: :attr:`priority`, unless a routine knows its shape limits."""
        return cls.priority

    @classmethod
    def quant_tensors(cls, layer):
        """The tensors whose quantization parameters :meth:`prepare` reads (its uint8 inputs and
        outputs): a graph that has none for one of them (not calibrated) offers it no such layer."""
        return ()

    @classmethod
    def profile_args(cls, layer, args):
        """The arguments the profiler times a run on, from its random ones (non-float inputs are
        zeros): a routine whose work depends on an input's value (an If's condition) sets it."""
        return args

    @classmethod
    def quant_applies(cls, layer, quant):
        """Whether the parameters in ``quant`` (a :class:`~workbench.ir.quant.QuantTable` holding
        every :meth:`quant_tensors` tensor) suit this routine: a routine that moves integers needs
        its output quantized as its input is."""
        return True

    # -- how it runs -----------------------------------------------------------------------
    @classmethod
    def prepare(cls, layer):
        """Once per layer: packed weights and other state for :meth:`run` (cached by the caller)."""
        return None

    @classmethod
    def workspace(cls, layer, specs, num_threads) -> int:
        """Bytes of scratch a run with up to ``num_threads`` threads needs beside its inputs and
        outputs (gathered im2col rows, a zero-bordered image, transform-domain tiles); 0 for none.
        A compiled model's memory planner places the workspaces in its arena (one buffer they
        share: steps run one at a time) and hands each over through :meth:`attach`."""
        return 0

    @classmethod
    def attach(cls, state, workspace):
        """``state`` (from :meth:`prepare`) given its workspace: a uint8 array of
        :meth:`workspace` bytes, 64-byte aligned, used by one run at a time.  Routines that
        declare a workspace keep it in their state for :meth:`run` and :meth:`bind`."""
        if isinstance(state, dict):
            state["workspace"] = workspace
        return state

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        """Compute ``layer``: read ``args`` (arrays in :meth:`input_layouts`, None for omitted
        inputs, constants included), write every array of ``outs`` in :meth:`output_layouts`."""
        raise NotImplementedError

    @classmethod
    def bind(cls, layer, state, args, outs):
        """Optionally, :meth:`run` on these very arrays (an executor's buffers, fixed for its
        life) as a callable of ``num_threads`` alone, checked once here instead of at every call;
        None (the default) to be called through :meth:`run`."""
        return None


def prepared(routine, layer, specs, num_threads, workspace=None, quant=None):
    """``routine.prepare(layer)`` with its workspace attached: ``workspace`` (the planner's), or
    a new aligned array where the routine declares one and none is given (the profiler's).
    ``quant``: the graph's :class:`~workbench.ir.quant.QuantTable`, for a :attr:`~Routine.quantized` one."""
    state = routine.prepare(layer, quant) if routine.quantized else routine.prepare(layer)
    need = routine.workspace(layer, specs, num_threads)
    if need:
        if workspace is None:
            workspace = aligned_bytes(need)
        elif workspace.nbytes < need:
            raise ValueError(f"{routine.descriptor}: a workspace of {workspace.nbytes} bytes, {need} needed")
        state = routine.attach(state, workspace)
    return state


def aligned_bytes(nbytes, align=64):
    """A uint8 array of ``nbytes`` starting on an ``align``-byte boundary."""
    return aligned_empty(nbytes, np.uint8, align)


def load_all():
    """Import every routine module of this package (registration happens on import)."""
    global _loaded
    if not _loaded:
        for info in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{info.name}")
        _loaded = True


def routines_for(op):
    """``{descriptor: Routine}`` registered for ``op``."""
    load_all()
    return dict(_REGISTRY.get(op, {}))


def all_routines():
    """Every ``(op, descriptor, Routine)``, sorted."""
    load_all()
    return [(op, d, r) for op in sorted(_REGISTRY) for d, r in sorted(_REGISTRY[op].items())]


def error_weight(descriptor):
    """:attr:`Routine.error_weight` of the routine(s) named ``descriptor`` (any op), 1 if none."""
    return max((r.error_weight for _, d, r in all_routines() if d == descriptor), default=1.0)


def get(op, descriptor):
    """The routine named ``descriptor`` for ``op``; KeyError naming the known ones otherwise."""
    table = routines_for(op)
    if descriptor not in table:
        raise KeyError(f"no routine {descriptor!r} for {op}; {op} has: {', '.join(sorted(table)) or 'none'}")
    return table[descriptor]


def precision_notes(precisions):
    """Why a data type of ``precisions`` gets no routine on this machine: one line for each whose
    routines are all unavailable (an instruction set the CPU lacks, a build that is missing)."""
    load_all()
    notes = []
    for dtype in precisions:
        mine = {r for table in _REGISTRY.values() for r in table.values() if r.dtype == dtype}
        if mine and not any(r.available() for r in mine):
            needs = sorted({r.requires for r in mine if r.requires})
            notes.append(f"no {dtype} routine is offered: {'; '.join(needs) or 'unavailable on this machine'}")
    return notes


def applicable(graph, layer, precisions=FLOAT32_ONLY):
    """Routines that apply to ``layer`` (a graph layer), best default first: those computing in
    one of ``precisions`` (data type names; None: every one)."""
    specs = graph.input_specs(layer)
    # a pre-quantized model's tensors (ir/passes/fuse_qdq.py) are read in uint8 alone, whatever
    # the precisions: where the model rounds them
    model = graph.meta.get("model_quant", {})
    quantized = [i for i, t in enumerate(layer.inputs) if t in model and i not in layer.consts]
    if quantized:
        precisions = None
    found = [r for r in routines_for(layer.op).values()
             if (precisions is None or r.dtype in precisions) and r.applies(layer, specs)
             and all(t in graph.quant for t in r.quant_tensors(layer)) and r.quant_applies(layer, graph.quant)
             and all(r.input_formats(layer, specs)[i].dtype == "uint8" for i in quantized)]
    return sorted(found, key=lambda r: (-r.preference(layer, specs), r.descriptor))
