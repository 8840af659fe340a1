"""The layer graph: layers (what is computed) as nodes of a ``networkx.DiGraph``, tensors as edges.

A :class:`Layer` holds a normalised op (explicit pads/strides, ``auto_pad`` resolved, constant
inputs such as Reshape's shape turned into attributes), its constant inputs (weights) by input
position, and the :class:`TensorSpec` of each output.  An edge ``a -> b`` means that layer ``b``
reads at least one tensor that layer ``a`` writes; the edge's ``tensors`` attribute names them.
Graph inputs are not nodes: they are named tensors with a spec in :attr:`Graph.inputs`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import networkx as nx
import numpy as np

from .formats import Format
from .quant import QuantTable

# ONNX's own dimension order (channels first for 4-D activations).  Routines of later layers
# may produce "nhwc"; the adapt layers convert between the two.
NCHW = "nchw"
NHWC = "nhwc"


@dataclass(frozen=True)
class TensorSpec:
    """Shape, element type and memory layout of a tensor.

    ``shape`` is always given in ONNX (logical) order, whatever the layout.
    """

    shape: tuple
    dtype: str = "float32"
    layout: str = NCHW

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        object.__setattr__(self, "dtype", np.dtype(self.dtype).name)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize

    def with_layout(self, layout: str) -> "TensorSpec":
        return replace(self, layout=layout)

    @property
    def format(self) -> Format:
        return Format(self.dtype, self.layout)

    def with_format(self, fmt: Format) -> "TensorSpec":
        """This tensor held in ``fmt`` (its data type and layout)."""
        return replace(self, dtype=fmt.dtype, layout=fmt.layout)

    @classmethod
    def of(cls, array) -> "TensorSpec":
        array = np.asarray(array)
        return cls(array.shape, array.dtype.name)

    def __str__(self):
        dims = "x".join(str(d) for d in self.shape) or "scalar"
        return f"{dims} {self.dtype}" + ("" if self.layout == NCHW else f" {self.layout}")


@dataclass
class Layer:
    """One layer of the model.

    Attributes
    ----------
    name : str
        Unique layer name (the ONNX node name, or a generated one when the node had none).
    op : str
        Op type, e.g. ``"Conv"``; see :mod:`workbench.ir.ops` for the supported ones.
    inputs : list of str
        Input tensor names in the op's positional order; ``""`` for an omitted optional input.
    outputs : list of str
        Output tensor names.
    attrs : dict
        Normalised attributes.  Fused layers carry ``activation`` (an op name) and
        ``activation_params``; a Conv with a fused residual add carries ``residual=True`` and reads
        the skip tensor as its input 3.
    consts : dict[int, numpy.ndarray]
        Constant inputs (weights, biases, constant operands) by input position.
    out_specs : list of TensorSpec
        Spec of each output, from static shape inference.
    fused : list of str
        Names of the original ONNX nodes this layer absorbed (itself first).
    meta : dict
        Free-form derived facts (source index, profiling notes, ...).
    """

    name: str
    op: str
    inputs: list
    outputs: list
    attrs: dict = field(default_factory=dict)
    consts: dict = field(default_factory=dict)
    out_specs: list = field(default_factory=list)
    fused: list = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def const(self, position):
        """The constant at input ``position``, or None."""
        return self.consts.get(position)

    @property
    def activation_inputs(self):
        """Names of the non-constant, non-omitted inputs, in order (duplicates kept once)."""
        seen = []
        for i, name in enumerate(self.inputs):
            if name and i not in self.consts and name not in seen:
                seen.append(name)
        return seen

    @property
    def num_params(self) -> int:
        return int(sum(np.asarray(v).size for v in self.consts.values()))

    def __repr__(self):
        return f"Layer({self.name!r}, {self.op}, in={self.inputs}, out={self.outputs})"


class Graph:
    """A model as a DAG of layers.

    Parameters
    ----------
    name : str
        Model name.
    inputs : dict[str, TensorSpec]
        Graph inputs in their declared order.
    outputs : list of str
        Names of the graph outputs.

    ``quant`` holds its tensors' quantization parameters (:mod:`workbench.ir.quant`), apart from
    the formats the selection chooses among.
    """

    def __init__(self, name="model", inputs=None, outputs=None):
        self.name = name
        self.inputs = dict(inputs or {})
        self.outputs = list(outputs or [])
        # Graph outputs that constant folding turned into constants.
        self.constants = {}
        self.dg = nx.DiGraph()
        self.meta = {}
        self.quant = QuantTable()
        self._producer = {}
        self._order = None
        self._next_index = 0

    # -- construction ----------------------------------------------------------------------
    def add_layer(self, layer: Layer) -> Layer:
        if layer.name in self.dg:
            raise ValueError(f"duplicate layer name {layer.name!r}")
        layer.meta.setdefault("index", self._next_index)
        self._next_index = max(self._next_index, layer.meta["index"]) + 1
        if not layer.fused:
            layer.fused = [layer.name]
        self.dg.add_node(layer.name, layer=layer)
        for out in layer.outputs:
            if out:
                self._producer[out] = layer.name
        self._invalidate()
        return layer

    def remove_layer(self, name: str) -> Layer:
        layer = self.dg.nodes[name]["layer"]
        for out in layer.outputs:
            if self._producer.get(out) == name:
                del self._producer[out]
        self.dg.remove_node(name)
        self._invalidate()
        return layer

    def rename_tensor(self, old: str, new: str):
        """Make every reader of ``old`` read ``new`` instead (graph outputs included)."""
        for layer in self:
            layer.inputs = [new if t == old else t for t in layer.inputs]
        self.outputs = [new if t == old else t for t in self.outputs]
        if old in self.quant and new not in self.quant:   # the readers' tensor keeps its parameters
            self.quant[new] = self.quant[old]
        self._invalidate()

    def touch(self):
        """Call after editing layers' inputs/outputs in place, so edges are rebuilt."""
        self._producer = {out: name for name, d in self.dg.nodes(data=True) for out in d["layer"].outputs if out}
        self._invalidate()

    def _invalidate(self):
        self._order = None
        self._edges_stale = True

    def _rebuild_edges(self):
        if not getattr(self, "_edges_stale", True):
            return
        self.dg.remove_edges_from(list(self.dg.edges))
        for node, data in self.dg.nodes(data=True):
            for t in data["layer"].activation_inputs:
                src = self._producer.get(t)
                if src is not None:
                    if self.dg.has_edge(src, node):
                        self.dg.edges[src, node]["tensors"].append(t)
                    else:
                        self.dg.add_edge(src, node, tensors=[t])
        self._edges_stale = False

    # -- queries ---------------------------------------------------------------------------
    def __iter__(self):
        """Layers in a deterministic topological order (source order where it is free)."""
        if self._order is None:
            self._rebuild_edges()
            index = {n: d["layer"].meta["index"] for n, d in self.dg.nodes(data=True)}
            self._order = [self.dg.nodes[n]["layer"]
                           for n in nx.lexicographical_topological_sort(self.dg, key=lambda n: (index[n], n))]
        return iter(self._order)

    def __len__(self):
        return self.dg.number_of_nodes()

    def __contains__(self, name):
        return name in self.dg

    def layer(self, name: str) -> Layer:
        try:
            return self.dg.nodes[name]["layer"]
        except KeyError:
            raise KeyError(f"no layer named {name!r}") from None

    @property
    def edges(self):
        self._rebuild_edges()
        return self.dg.edges

    def tensor_names(self):
        """Every tensor the graph holds: its inputs and each layer's outputs."""
        return set(self.inputs) | {t for layer in self for t in layer.outputs if t}

    def producer(self, tensor: str):
        """The layer writing ``tensor``, or None for graph inputs and unknown names."""
        name = self._producer.get(tensor)
        return None if name is None else self.layer(name)

    def consumers(self, tensor: str):
        """Layers reading ``tensor`` as a non-constant input, in topological order."""
        return [l for l in self if tensor in l.activation_inputs]

    def consumers_of_outputs(self, layer: Layer):
        """Layers reading any output of ``layer``."""
        outs = {o for o in layer.outputs if o}
        return [l for l in self if outs.intersection(l.activation_inputs)]

    def single_consumer(self, tensor: str):
        """The only layer reading ``tensor``, or None (several readers, none, or a graph output)."""
        if tensor in self.outputs:
            return None
        readers = self.consumers(tensor)
        return readers[0] if len(readers) == 1 else None

    def spec(self, tensor: str) -> TensorSpec:
        if tensor in self.inputs:
            return self.inputs[tensor]
        if tensor in self.constants:
            return TensorSpec.of(self.constants[tensor])
        layer = self.producer(tensor)
        if layer is None:
            raise KeyError(f"unknown tensor {tensor!r}")
        return layer.out_specs[layer.outputs.index(tensor)]

    def input_specs(self, layer: Layer):
        """Spec of each input of ``layer`` (None for omitted optional inputs)."""
        specs = []
        for i, t in enumerate(layer.inputs):
            if i in layer.consts:
                specs.append(TensorSpec.of(layer.consts[i]))
            elif t:
                specs.append(self.spec(t))
            else:
                specs.append(None)
        return specs

    @property
    def num_params(self) -> int:
        return sum(l.num_params for l in self)

    def op_counts(self):
        counts = {}
        for l in self:
            counts[l.op] = counts.get(l.op, 0) + 1
        return dict(sorted(counts.items()))

    def unique_name(self, base: str) -> str:
        name, k = base, 1
        while name in self.dg:
            k += 1
            name = f"{base}_{k}"
        return name

    def __repr__(self):
        return f"Graph({self.name!r}, {len(self)} layers, inputs={list(self.inputs)}, outputs={self.outputs})"
