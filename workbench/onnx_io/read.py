"""ONNX -> :class:`~workbench.ir.graph.Graph`: read, check support, fix shapes, fold constants.

The import walks the nodes in dependency order.  A node whose inputs are all constant (weights,
Constant nodes, or the static spec of a tensor, for Shape/Size and CastLike's target type; see
:data:`~workbench.ir.passes.constant_folding.SPEC_ONLY_INPUTS`) is computed right away with the
NumPy reference and becomes a constant: this folds the shape subgraphs that exporters write.
Every other node becomes a :class:`~workbench.ir.graph.Layer` with normalised attributes and
inferred output specs.  Unsupported ops are all reported in one error before anything runs.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import helper, numpy_helper

from ..ir import ops
from ..errors import ModelFileError, ModelImportError, ShapeError, UnsupportedOpsError, WorkbenchError
from ..ir.graph import Graph, Layer, TensorSpec
from ..ir.passes.constant_folding import fold_node
from ..ir.passes.fuse_qdq import bias_quant, weight_quant

from .control_flow import (NEXT, Unrolled, branch_graphs, condition, inline_branch, outer_constants, reads,
                           unroll_scan)
from .input_shapes import _dims, _np_dtype, _resolve_input_shape, constant_inputs, symbolic_dims_message  # noqa: F401
from .support import _default_opset, _domain, _opsets, unsupported_ops

_MISSING = object()


def read_model(source) -> onnx.ModelProto:
    """Read an ONNX model from a path, bytes or a ModelProto, with clear errors.

    External-data tensors are loaded from beside the file.  A TensorFlow SavedModel directory, a
    Keras ``.keras``/``.h5`` file or a ``.tflite`` file is converted first (:mod:`.tensorflow`).
    """
    if isinstance(source, onnx.ModelProto):
        return source
    if isinstance(source, (bytes, bytearray)):
        data, where = bytes(source), "<bytes>"
    else:
        path = Path(os.fspath(source))
        if not path.exists():
            raise ModelFileError(f"{path}: no such file")
        from . import tensorflow
        if tensorflow.kind(path) is not None:
            return read_model(tensorflow.convert(path))
        if path.is_dir():
            raise ModelFileError(f"{path}: is a directory, not an ONNX file (nor a TensorFlow SavedModel)")
        data, where = path.read_bytes(), str(path)
    if not data:
        raise ModelFileError(f"{where}: file is empty")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise ModelFileError(f"{where}: not a valid ONNX file, or truncated ({len(data)} bytes): {e}") from None
    if not model.HasField("graph") or model.ir_version == 0 or not model.opset_import:
        raise ModelFileError(f"{where}: not an ONNX model (no graph, IR version or opset in the file)")
    if where != "<bytes>":
        try:
            onnx.external_data_helper.load_external_data_for_model(model, str(Path(where).parent))
        except (OSError, ValueError, onnx.checker.ValidationError) as e:
            raise ModelFileError(f"{where}: cannot read its external data: {e}") from None
    return model


def _attr_value(a):
    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    if isinstance(v, onnx.TensorProto):
        return numpy_helper.to_array(v)
    if isinstance(v, list) and v and isinstance(v[0], bytes):
        return [s.decode("utf-8", errors="replace") for s in v]
    return v


class NodeView:
    """What an :meth:`Op.normalize` may ask of the ONNX node it normalises."""

    def __init__(self, proto, name, opset, consts, spec_of):
        self.proto, self.name, self.op_type, self.opset = proto, name, proto.op_type, opset
        self.domain = _domain(proto)
        self.inputs, self.outputs = list(proto.input), list(proto.output)
        self._attrs = {a.name: a for a in proto.attribute}
        self._consts, self._spec_of = consts, spec_of
        self.consumed = set()

    def fail(self, message):
        raise ModelImportError(f"node {self.name!r} ({self.op_type}): {message}")

    def attr(self, name, default=_MISSING):
        if name in self._attrs:
            return _attr_value(self._attrs[name])
        if default is _MISSING:
            self.fail(f"required attribute {name!r} is missing")
        return default

    def dtype_attr(self, name):
        return _np_dtype(self.attr(name), f"node {self.name!r} ({self.op_type}) attribute {name!r}")

    def _present(self, i):
        return i < len(self.inputs) and self.inputs[i] != ""

    def const(self, i):
        return self._consts.get(self.inputs[i]) if self._present(i) else None

    def spec(self, i) -> TensorSpec:
        if not self._present(i):
            self.fail(f"input {i} is missing")
        return self._spec_of(self.inputs[i])

    def const_spec(self, i, what):
        if self.const(i) is None:
            self.fail(f"{what} (input {i}, {self.inputs[i] if self._present(i) else 'absent'!r}) must be a constant")
        return TensorSpec.of(self.const(i))

    def take(self, i, what, required=False):
        """The constant value of input ``i`` as an attribute; the input is then dropped."""
        if not self._present(i):
            if required:
                self.fail(f"{what} (input {i}) is required")
            return None
        value = self.const(i)
        if value is None:
            self.fail(f"{what} (input {i}, tensor {self.inputs[i]!r}) is computed at run time; only constant "
                      f"values are supported (shapes must be static)")
        self.consumed.add(i)
        return value


def _node_order(nodes, known):
    """Indices of ``nodes`` in dependency order (stable: source order where free)."""
    produced_by = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    read = [reads(n) for n in nodes]   # an If's branches read tensors its inputs do not name
    done, order, visiting = set(), [], set()

    def visit(i):
        if i in done:
            return
        if i in visiting:
            raise ModelImportError(f"node {nodes[i].name!r} ({nodes[i].op_type}) is part of a cycle")
        visiting.add(i)
        for t in read[i]:
            j = produced_by.get(t)
            if t and t not in known and j is not None:
                visit(j)
        visiting.discard(i)
        done.add(i)
        order.append(i)

    for i in range(len(nodes)):
        visit(i)
    return order


def import_onnx(source, batch=None, resolution=None, shapes=None, name=None, constants=None) -> Graph:
    """Import an ONNX model into a static-shaped :class:`Graph` (no fusion; see :func:`workbench.load`).

    Parameters
    ----------
    source : str, Path, bytes or onnx.ModelProto
    batch : int, optional
        Value of the batch dimension (dim 0 of every input) when it is symbolic.
    resolution : int or (int, int), optional
        Height and width (dims 2 and 3) of 4-D inputs when they are symbolic.

    Every symbolic dimension left without a value is listed in one :class:`ShapeError`, with
    the CLI flags and keywords that give them.
    shapes : dict[str, tuple], optional
        Full shape per input name; takes precedence over ``batch``/``resolution``.
    constants : dict[str, array-like], optional
        Values of inputs that are fixed for this use of the model (a voice-activity model's
        sample rate): they become constants, and what depends on them only folds at load (an
        ``If`` on them is its chosen branch).  They are no longer inputs of the graph.
    """
    model = read_model(source)
    g = model.graph
    opset = _default_opset(model)
    bad = unsupported_ops(model)
    if bad:
        raise UnsupportedOpsError(bad)
    if isinstance(resolution, int):
        resolution = (resolution, resolution)
    consts = {}
    for init in g.initializer:
        try:
            consts[init.name] = numpy_helper.to_array(init)
        except Exception as e:  # noqa: BLE001 - onnx raises several types for bad tensors
            raise ModelFileError(f"initializer {init.name!r}: cannot be read ({e})") from None
    consts.update(constant_inputs(g, consts, constants))
    inputs, missing = {}, []
    model_inputs = [vi for vi in g.input if vi.name not in consts]
    for vi in model_inputs:
        inputs[vi.name] = _resolve_input_shape(vi, batch, resolution, shapes, missing)
    if missing:
        raise ShapeError(symbolic_dims_message(model_inputs, missing))
    if shapes:
        unknown = set(shapes) - set(inputs)
        if unknown:
            raise ShapeError(f"shapes given for unknown input(s) {sorted(unknown)}; the model's inputs are {list(inputs)}")
    graph = Graph(name or g.name or "model", inputs=inputs, outputs=[o.name for o in g.output])
    opsets = _opsets(model)
    graph.meta.update(opset=opset, opsets=opsets, producer=f"{model.producer_name} {model.producer_version}".strip(),
                      source_nodes=len(g.node), source_op_counts=_op_counts(g.node))
    if constants:
        graph.meta["constant_inputs"] = {k: consts[k] for k in constants}

    def spec_of(tensor):
        if tensor in consts:
            return TensorSpec.of(consts[tensor])
        try:
            return graph.spec(tensor)
        except KeyError:
            raise ModelImportError(f"tensor {tensor!r} is read but never produced (not an input, initializer or "
                                   f"node output)") from None

    used_names = set()
    folded_dq = {}   # tensor -> (int8 constant, attrs) of a folded DequantizeLinear of weights
    pending = [(i, g.node[i]) for i in _node_order(list(g.node), set(consts) | set(inputs))][::-1]
    next_index = len(g.node)
    loops = {}   # name -> Unrolled
    while pending:
        index, node = pending.pop()
        name = node.name or f"{node.op_type}_{index}"
        while name in used_names:
            name += "_"
        used_names.add(name)
        if node.op_type == "Constant":
            consts[node.output[0]] = _constant_value(node, name)
            continue
        nodes = None
        if node.op_type == "If" and _domain(node) == "" and node.input[0] not in consts:
            graph.add_layer(_if_layer(node, name, index, model, consts, spec_of))
            continue
        if node.op_type == "If" and _domain(node) == "":
            nodes, branch_consts = inline_branch(node, condition(consts[node.input[0]], name), name)
            consts.update(branch_consts)
        elif node.op_type == "Loop" and _domain(node) == "":
            loops[name] = Unrolled(node, name, consts, opset)
            nodes = loops[name].start(consts)
        elif node.op_type == "Scan" and _domain(node) == "":
            nodes = unroll_scan(node, name, consts, spec_of, opset)
        elif node.op_type == NEXT:
            nodes = loops[node.name.rsplit("/i", 1)[0]].step(consts)
        if nodes is not None:   # what stands for the node, imported next
            pending += [(next_index + k, n) for k, n in enumerate(nodes)][::-1]
            next_index += len(nodes)
            continue
        view = NodeView(node, name, opsets.get(_domain(node), 1), consts, spec_of)
        layer = _make_layer(view, index, spec_of)
        if fold_node(layer, consts, spec_of):
            if layer.op == "DequantizeLinear" and 0 in layer.consts:
                folded_dq[layer.outputs[0]] = (layer.consts[0], layer.attrs)
            continue
        if len(layer.inputs) > 1 and layer.inputs[1] in folded_dq:
            weight_quant(layer, *folded_dq[layer.inputs[1]])
        if len(layer.inputs) > 2 and layer.inputs[2] in folded_dq:
            bias_quant(layer, *folded_dq[layer.inputs[2]])
        graph.add_layer(layer)
        layer.out_specs = ops.get(layer.op).infer(layer, graph.input_specs(layer))
    for out in graph.outputs:
        if out in consts:
            graph.constants[out] = consts[out]
        elif out not in graph.inputs and graph.producer(out) is None:
            raise ModelImportError(f"graph output {out!r} is never produced")
    return graph


def _if_layer(node, name, index, model, consts, spec_of):
    """The layer of an If whose condition is known only at run time: the condition and what its
    branches read as inputs, the branches as graphs of their own (``meta["branches"]``)."""
    import hashlib
    cond = spec_of(node.input[0])
    if cond.dtype != "bool" or int(np.prod(cond.shape, dtype=np.int64)) != 1:
        raise ModelImportError(f"node {name!r} (If): its condition must be one bool, got {cond}")
    reads_, graphs = branch_graphs(node, name, model, consts, spec_of, import_onnx)
    layer = Layer(name=name, op="If", inputs=[node.input[0]] + reads_, outputs=list(node.output),
                  attrs={"branches": hashlib.sha256(node.SerializeToString()).hexdigest()[:24]},
                  meta={"index": index, "branches": graphs, "outer_constants": outer_constants(node, consts),
                        "onnx": {"op_type": "If", "domain": "", "taken": {},
                                 "attributes": [copy_attr(a) for a in node.attribute]}})
    layer.out_specs = ops.get("If").infer(layer, [cond] + [spec_of(t) for t in reads_])
    return layer


def _op_counts(nodes):
    counts = {}
    for n in nodes:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return dict(sorted(counts.items()))


def _constant_value(node, name):
    for a in node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t)
        if a.name in ("value_float", "value_int"):
            return np.array(_attr_value(a), np.float32 if a.name == "value_float" else np.int64)
        if a.name in ("value_floats", "value_ints"):
            return np.array(_attr_value(a), np.float32 if a.name == "value_floats" else np.int64)
    raise ModelImportError(f"node {name!r} (Constant): only tensor, float(s) and int(s) values are supported")


def _make_layer(view, index, spec_of):
    op = ops.lookup(view.domain, view.op_type, view.opset)
    try:
        attrs = op.normalize(view)
    except WorkbenchError:
        raise
    except Exception as e:  # a malformed attribute deep in normalisation still names its node
        raise ModelImportError(f"node {view.name!r} ({view.op_type}): cannot read its attributes: {e}") from None
    inputs = ["" if i in view.consumed else t for i, t in enumerate(view.inputs)]
    while inputs and inputs[-1] == "":
        inputs.pop()
    consts = {i: view.const(i) for i, t in enumerate(inputs) if t and view.const(i) is not None}
    # What export needs to write the node back as ONNX: its attributes as they were, and the
    # constant inputs that normalisation turned into attributes.
    source = {"op_type": view.op_type, "domain": view.domain, "attributes": [copy_attr(a) for a in view.proto.attribute],
              "taken": {i: (view.inputs[i], view.const(i)) for i in sorted(view.consumed)}}
    return Layer(name=view.name, op=op.op_type, inputs=inputs, outputs=list(view.outputs), attrs=attrs,
                 consts=consts, meta={"index": index, "onnx": source})


def copy_attr(attribute):
    a = onnx.AttributeProto()
    a.CopyFrom(attribute)
    return a
