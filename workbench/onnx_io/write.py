"""Write a (fused) :class:`~workbench.ir.graph.Graph` back as a standard ONNX model.

Every layer becomes the ONNX node it came from, under the layer's name, with its current
constants (folded BatchNorm weights included) and its original attributes; what fusion added is
spelled out again in standard ops after it, each node named ``<layer>/<part>``:

- a fused residual add: ``Add(<layer>/raw, skip)``, or after the activation where it came after it;
- a MatMul's fused bias: ``MatMul`` into ``<layer>/product``, then ``Add`` named ``<layer>/bias``;
- a fused activation: its own op (``HardSwish`` as ``HardSigmoid`` + ``Mul`` before opset 14, as
  is a HardSwish layer of its own, whose ``HardSigmoid`` node keeps the layer's name);
- a fused post-activation affine: ``Mul`` + ``Add`` by per-channel constants after the activation;
- a :class:`~workbench.ir.ops.normalization.ChannelAffine` is written as the
  ``BatchNormalization`` it came from, with mean 0, variance 1 and epsilon 0 (exact);
- an ``EltwiseChain`` as the Add/Sub/Mul/Div layers it was fused from, under their names (and
  the Resize layers whose sources it reads, before them);
- a ``SoftmaxDot`` as ``[Transpose ->] Softmax -> Conv`` (or ``MatMul``), the first two named
  ``<layer>/transpose`` and ``<layer>/softmax``, the last under the layer's name;
- ``Silu`` (not an ONNX op) as ``Sigmoid`` + ``Mul``; ``Gelu`` before opset 20 as the Erf or Tanh
  formula; ``LayerNormalization`` before opset 17 as ReduceMean/Sub/Pow/.../Add.  The node that
  the fusion passes anchor on (Sigmoid, Erf, Tanh, the first ReduceMean) carries the layer's name.

Importing the result runs the same fusion passes and gives back the same layers with the same
names, which is how a tuned file finds its routine annotations again; ONNX Runtime runs it as
any ONNX model.  ``node_metadata[layer]`` (a dict of strings) goes into the layer's node's
``metadata_props``, ``model_metadata`` into the model's.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import WorkbenchError, where
from ..ir.graph import Layer
from ..ir.passes.fuse_qdq import BIAS, MODEL_QUANT, PRE_RESIDUAL, WEIGHTS

#: IR version 10 is the first whose NodeProto carries metadata_props.
MIN_IR_VERSION = 10


class _Writer:
    def __init__(self, opset):
        self.opset = opset
        self.nodes = []
        self.initializers = {}   # name -> TensorProto
        self.domains = set()     # domains other than the default the nodes are in
        self._values = {}        # name -> the array it holds

    def const(self, name, value):
        """An initializer named ``name`` (renamed when the name holds another value already)."""
        value = np.asarray(value)
        base, k = name, 0
        while name in self._values and not (self._values[name].dtype == value.dtype
                                            and self._values[name].shape == value.shape
                                            and np.array_equal(self._values[name], value)):
            k += 1
            name = f"{base}.{k}"
        if name not in self._values:
            self._values[name] = value
            self.initializers[name] = numpy_helper.from_array(value, name)
        return name

    def node(self, op, inputs, outputs, name, attributes=(), metadata=None, domain="", **attrs):
        n = helper.make_node(op, inputs, outputs, name=name, domain=domain or None, **attrs)
        if domain:
            self.domains.add(domain)
        n.attribute.extend(attributes)
        for k, v in (metadata or {}).items():
            n.metadata_props.add(key=k, value=str(v))
        self.nodes.append(n)
        return n


def _silu(w, name, x, y, metadata, part_of):
    w.node("Sigmoid", [x], [f"{name}.sigmoid"], name, metadata=metadata)
    w.node("Mul", [x, f"{name}.sigmoid"], [y], f"{name}/mul", metadata=part_of)


def _gelu(w, name, x, y, approximate, metadata, part_of):
    if w.opset >= 20:
        w.node("Gelu", [x], [y], name, metadata=metadata, approximate=approximate)
        return

    def const(tag, v):
        return w.const(f"{name}.{tag}", np.array(v, np.float32))

    def step(op, a, b, tag, anchor=False):
        out = f"{name}.{tag}"
        w.node(op, [a] + ([b] if b else []), [out], name if anchor else f"{name}/{tag}",
               metadata=metadata if anchor else part_of)
        return out
    if approximate == "tanh":
        t = step("Mul", x, x, "sq")
        t = step("Mul", t, x, "cube")
        t = step("Mul", t, const("c", 0.044715), "cubic")
        t = step("Add", x, t, "inner")
        t = step("Mul", t, const("k", np.sqrt(2 / np.pi)), "scaled")
        t = step("Tanh", t, None, "tanh", anchor=True)
    else:
        t = step("Mul", x, const("rsqrt2", 1 / np.sqrt(2)), "scaled")
        t = step("Erf", t, None, "erf", anchor=True)
    t = step("Add", t, const("one", 1.0), "plus1")
    t = step("Mul", x, t, "times_x")
    w.node("Mul", [t, const("half", 0.5)], [y], f"{name}/half", metadata=part_of)


def _layernorm(w, layer, y, metadata, part_of):
    """LayerNormalization as exporters spelled it before opset 17 (the first ReduceMean anchors it)."""
    name, x = layer.name, layer.inputs[0]
    rank = len(layer.out_specs[0].shape)
    axes = list(range(layer.attrs["axis"] % rank, rank))

    def step(op, ins, tag, anchor=False, **attrs):
        out = f"{name}.{tag}"
        w.node(op, ins, [out], name if anchor else f"{name}/{tag}", metadata=metadata if anchor else part_of, **attrs)
        return out
    mean = step("ReduceMean", [x], "mean", anchor=True, axes=axes)
    d = step("Sub", [x, mean], "centered")
    sq = step("Pow", [d, w.const(f"{name}.two", np.array(2.0, np.float32))], "sq")
    var = step("ReduceMean", [sq], "var", axes=axes)
    var = step("Add", [var, w.const(f"{name}.eps", np.array(layer.attrs["epsilon"], np.float32))], "var_eps")
    std = step("Sqrt", [var], "std")
    t = step("Div", [d, std], "normed")
    scale = layer.consts.get(1)
    bias = layer.consts.get(2) if len(layer.inputs) > 2 and layer.inputs[2] else None
    if bias is None:
        w.node("Mul", [t, w.const(f"{name}.scale", scale)], [y], f"{name}/scale", metadata=part_of)
    else:
        t = step("Mul", [t, w.const(f"{name}.scale", scale)], "scaled")
        w.node("Add", [t, w.const(f"{name}.bias", bias)], [y], f"{name}/bias", metadata=part_of)


def _softmax_dot(w, layer, y, metadata, part_of):
    """A SoftmaxDot as the layers it was fused from (``passes/fuse_softmax_dot.py``)."""
    rec, name, x = layer.meta["softmax_dot"], layer.name, layer.inputs[0]
    if rec["transpose"] is not None:
        w.node("Transpose", [x], [rec["transpose"]["output"]], f"{name}/transpose", metadata=part_of,
               perm=rec["transpose"]["perm"])
        x = rec["transpose"]["output"]
    w.node("Softmax", [x], [rec["softmax"]["output"]], f"{name}/softmax", metadata=part_of, axis=rec["softmax"]["axis"])
    ins = [rec["softmax"]["output"], w.const(layer.inputs[1], layer.consts[1].reshape(rec["weight_shape"]))]
    bias = w.const(layer.inputs[2], layer.consts[2]) if 2 in layer.consts else None
    if rec["op"] == "Conv":
        source = layer.meta.get("onnx") or {}
        attributes = source.get("attributes", ()) if source.get("op_type") == "Conv" else ()
        w.node("Conv", ins + ([bias] if bias else []), [y], name, attributes=attributes, metadata=metadata,
               **({} if attributes else {"kernel_shape": [1, 1]}))
    elif bias is None:
        w.node("MatMul", ins, [y], name, metadata=metadata)
    else:   # a fused bias too (passes/fuse_matmul_bias.py)
        w.node("MatMul", ins, [f"{name}/product"], name, metadata=metadata)
        w.node("Add", [f"{name}/product", bias], [y], f"{name}/bias", metadata=part_of)


def _activation(w, layer, x, y, metadata):
    act, p = layer.attrs["activation"], layer.attrs.get("activation_params", {})
    name = f"{layer.name}/activation"
    if act == "Silu":
        _silu(w, name, x, y, metadata, metadata)
    elif act == "Gelu":
        _gelu(w, name, x, y, p.get("approximate", "none"), metadata, metadata)
    elif act == "Clip":
        lo = "" if not np.isfinite(p["min"]) else p["min"]
        hi = "" if not np.isfinite(p["max"]) else p["max"]
        if w.opset < 11:
            kw = {k: float(v) for k, v in (("min", lo), ("max", hi)) if v != ""}
            w.node("Clip", [x], [y], name, metadata=metadata, **kw)
        else:
            ins = [x] + ["" if v == "" else w.const(f"{name}.{k}", np.float32(v)) for k, v in (("min", lo), ("max", hi))]
            while ins[-1] == "":
                ins.pop()
            w.node("Clip", ins, [y], name, metadata=metadata)
    elif act == "PRelu":
        w.node("PRelu", [x, w.const(f"{name}.slope", p["slope"])], [y], name, metadata=metadata)
    elif act == "HardSwish" and w.opset < 14:
        gate = f"{name}.gate"
        w.node("HardSigmoid", [x], [gate], f"{name}/gate", metadata=metadata, alpha=1 / 6, beta=0.5)
        w.node("Mul", [x, gate], [y], name, metadata=metadata)
    elif act in ("LeakyRelu", "HardSigmoid"):
        kw = {k: float(v) for k, v in p.items() if k in ("alpha", "beta")}
        w.node(act, [x], [y], name, metadata=metadata, **kw)
    else:   # Relu, Sigmoid, Tanh, HardSwish
        w.node(act, [x], [y], name, metadata=metadata)


def _source_attributes(layer):
    """The layer's original ONNX attributes, updated where fusion changed their value."""
    source = layer.meta.get("onnx") or {}
    if source.get("op_type") != layer.op:
        return [], {}
    attributes = list(source.get("attributes", ()))
    if layer.op == "Gemm":   # BatchNorm folding rescales C into a plain bias (beta = 1)
        attributes = [a for a in attributes if a.name not in ("alpha", "beta")]
        attributes += [helper.make_attribute("alpha", float(layer.attrs["alpha"])),
                       helper.make_attribute("beta", float(layer.attrs["beta"]))]
    return attributes, source.get("taken", {})


def _chain_layers(layer):
    """The layers an EltwiseChain was fused from, rebuilt from its steps and ``meta["chain"]``:
    the Resize layers whose sources it reads in place first (``meta["upsampled"]``)."""
    upsampled = layer.meta.get("upsampled", {})
    layers, record = list(upsampled.values()), layer.meta["chain"]
    read = [upsampled[k].outputs[0] if k in upsampled else t for k, t in enumerate(layer.inputs)]
    for step, rec in zip(layer.attrs["steps"], record):
        inputs, consts = [], {}
        for pos, k in enumerate(step["args"]):
            inputs.append(read[k] if k >= 0 else record[-k - 1]["output"])
            if k >= 0 and k in layer.consts:
                consts[pos] = layer.consts[k]
        attrs = {key: step[key] for key in ("activation", "activation_params") if key in step}
        layers.append(Layer(name=rec["name"], op=step["op"], inputs=inputs, outputs=[rec["output"]], attrs=attrs,
                            consts=consts, out_specs=list(layer.out_specs), fused=list(rec["fused"])))
    return layers


def _emit(w, layer, metadata):
    if layer.op == "EltwiseChain":   # each step as the layer it was; the metadata goes on the last
        steps = _chain_layers(layer)
        for step in steps:
            _emit(w, step, metadata if step is steps[-1] else None)
        return
    part_of = {"workbench.part_of": layer.name}
    a = layer.attrs
    residual, act = bool(a.get("residual")), a.get("activation")
    out = layer.outputs[0] if layer.outputs else ""
    raw = f"{layer.name}/raw" if (residual or act or a.get("post_affine") is not None) else out
    if layer.op == "ChannelAffine":
        c = layer.consts[1].shape[0]
        dt = layer.consts[1].dtype
        ins = [layer.inputs[0], w.const(f"{layer.name}.scale", layer.consts[1]),
               w.const(f"{layer.name}.shift", layer.consts[2]), w.const(f"{layer.name}.mean", np.zeros(c, dt)),
               w.const(f"{layer.name}.var", np.ones(c, dt))]
        w.node("BatchNormalization", ins, [raw], layer.name, metadata=metadata, epsilon=0.0)
    elif layer.op == "Silu":
        _silu(w, layer.name, layer.inputs[0], raw, metadata, part_of)
    elif layer.op == "Gelu":
        _gelu(w, layer.name, layer.inputs[0], raw, layer.attrs.get("approximate", "none"), metadata, part_of)
    elif layer.op == "LayerNormalization" and w.opset < 17:
        _layernorm(w, layer, raw, metadata, part_of)
    elif layer.op == "LayerNormalization":   # possibly merged from ReduceMean/...: the attributes are the layer's
        ins = [layer.inputs[0]] + [w.const(layer.inputs[i], layer.consts[i]) for i in (1, 2)
                                   if i < len(layer.inputs) and layer.inputs[i]]
        w.node("LayerNormalization", ins, [raw], layer.name, metadata=metadata, axis=int(a["axis"]),
               epsilon=float(a["epsilon"]))
    elif layer.op == "HardSigmoid":   # may come from a Clip spelling: the attributes are the layer's
        w.node("HardSigmoid", [layer.inputs[0]], [raw], layer.name, metadata=metadata,
               alpha=float(a["alpha"]), beta=float(a["beta"]))
    elif layer.op == "HardSwish" and w.opset < 14:   # merged from HardSigmoid + Mul: written so again
        gate = f"{layer.name}/gate"
        w.node("HardSigmoid", [layer.inputs[0]], [gate], layer.name, metadata=metadata, alpha=1 / 6, beta=0.5)
        w.node("Mul", [layer.inputs[0], gate], [raw], f"{layer.name}/mul", metadata=part_of)
    elif layer.op == "SoftmaxDot":
        _softmax_dot(w, layer, raw, metadata, part_of)
    elif layer.op == "MatMul" and len(layer.inputs) == 3:   # a fused bias: the Add it came from
        product = f"{layer.name}/product"
        b = w.const(layer.inputs[1], layer.consts[1]) if 1 in layer.consts else layer.inputs[1]
        w.node("MatMul", [layer.inputs[0], b], [product], layer.name, metadata=metadata)
        w.node("Add", [product, w.const(layer.inputs[2], layer.consts[2])], [raw], f"{layer.name}/bias",
               metadata=part_of)
    else:
        attributes, taken = _source_attributes(layer)
        for t, value in layer.meta.get("outer_constants", {}).items():   # what an If's branches read
            if w.const(t, value) != t:
                raise WorkbenchError(f"{where(layer)}: its branches read the constant {t!r}, and another constant "
                                     f"of that name was written first; cannot export it")
        # a Conv's residual is written as its Add; an If reads its branches' tensors implicitly
        n_inputs = 3 if (layer.op == "Conv" and residual) else 1 if layer.op == "If" else len(layer.inputs)
        ins = list(layer.inputs[:n_inputs])
        for i, (name, value) in taken.items():
            ins += [""] * (i + 1 - len(ins))
            ins[i] = w.const(name, value)
        for i, value in layer.consts.items():
            if i < n_inputs:
                ins[i] = _integer_const(w, layer, i, ins[i]) or w.const(ins[i], value)
        while ins and ins[-1] == "":
            ins.pop()
        outs = [raw] + list(layer.outputs[1:])
        source = layer.meta.get("onnx") or {}
        w.node(source.get("op_type", layer.op) if source.get("domain") else layer.op, ins, outs, layer.name,
               attributes=attributes, metadata=metadata, domain=source.get("domain", ""))
    x = raw
    post = a.get("post_affine")
    after = residual and bool(a.get("residual_after_activation"))
    mid = layer.meta.get(PRE_RESIDUAL)
    if residual and not after and mid is not None:   # the model rounds the Conv's output before its add
        x = _qdq(w, x, mid, f"{layer.name}/raw", part_of)
    if residual and not after:
        y = out if not act else f"{layer.name}/sum"
        w.node("Add", [x, layer.inputs[3]], [y], f"{layer.name}/residual", metadata=part_of)
        x = y
    if act:
        y = out if post is None and not after else f"{layer.name}/activated"
        _activation(w, layer, x, y, part_of)
        x = y
    if after:   # the shortcut of a YOLO bottleneck: after the activation (never with a post affine)
        w.node("Add", [x, layer.inputs[3]], [out], f"{layer.name}/residual", metadata=part_of)
    if post is not None:   # after the activation, per channel (axis 1)
        shape = (1, -1) + (1,) * (len(layer.out_specs[0].shape) - 2)
        scaled = f"{layer.name}/post_scaled"
        w.node("Mul", [x, w.const(f"{layer.name}.post_scale", post["scale"].reshape(shape))], [scaled],
               f"{layer.name}/post_scale", metadata=part_of)
        w.node("Add", [scaled, w.const(f"{layer.name}.post_shift", post["shift"].reshape(shape))], [out],
               f"{layer.name}/post_shift", metadata=part_of)


def _integer_const(w, layer, i, name):
    """A pre-quantized model's weights (input 1) or bias (input 2) written as it had them: the
    integers and a DequantizeLinear (the name of its output), or None for a float constant."""
    if i == 1 and WEIGHTS in layer.meta:
        q, scales, axis = layer.meta[WEIGHTS]
        q = np.moveaxis(q, 0, axis)
        scale, zero = np.asarray(scales, np.float32), np.zeros(len(scales), np.int8)
    elif i == 2 and BIAS in layer.meta:
        q, scale = layer.meta[BIAS]
        q, axis, scale, zero = np.asarray(q, np.int32), 0, np.asarray(scale, np.float32), np.zeros(len(q), np.int32)
    else:
        return None
    if scale.size > 1 and w.opset < 13:
        return None   # per-channel DequantizeLinear needs opset 13: the float weights stand
    out = f"{name}_DequantizeLinear_Output"
    w.node("DequantizeLinear", [w.const(f"{name}_quantized", q), w.const(f"{name}_scale", scale),
                                w.const(f"{name}_zero_point", zero)], [out], f"{name}_DequantizeLinear",
           **({"axis": int(axis)} if scale.size > 1 else {}))
    return out


def _qdq(w, tensor, params, base, metadata=None):
    """``tensor`` through a QuantizeLinear/DequantizeLinear pair of ``params`` (uint8, per tensor),
    as a pre-quantized model writes it; returns the DequantizeLinear's output."""
    s, z = w.const(f"{base}_scale", np.float32(params.scale[0])), w.const(f"{base}_zero_point", np.uint8(params.zero_point[0]))
    w.node("QuantizeLinear", [tensor, s, z], [f"{base}_QuantizeLinear_Output"], f"{base}_QuantizeLinear", metadata=metadata)
    w.node("DequantizeLinear", [f"{base}_QuantizeLinear_Output", s, z], [f"{base}_DequantizeLinear_Output"],
           f"{base}_DequantizeLinear", metadata=metadata)
    return f"{base}_DequantizeLinear_Output"


def export_graph(graph, node_metadata=None, model_metadata=None, producer="workbench"):
    """``graph`` as an :class:`onnx.ModelProto` (see the module docstring)."""
    from dataclasses import replace

    from .._version import __version__
    opset = int(graph.meta.get("opset", 17))
    w = _Writer(opset)
    node_metadata = node_metadata or {}
    # A pre-quantized model's quantized tensors get their QuantizeLinear/DequantizeLinear pairs
    # back (ir/passes/fuse_qdq.py took them out): readers read the DequantizeLinear's output.
    model_quant = {t: graph.quant[t] for t in graph.meta.get(MODEL_QUANT, {}) if t in graph.quant}
    read = {t: _qdq(w, t, model_quant[t], t) for t in graph.inputs if t in model_quant}
    for layer in graph:
        if read and any(t in read for t in layer.inputs):
            layer = replace(layer, inputs=[read.get(t, t) for t in layer.inputs])
        _emit(w, layer, node_metadata.get(layer.name))
        for t in layer.outputs:
            if t in model_quant:
                read[t] = _qdq(w, t, model_quant[t], t)
    inputs = [helper.make_tensor_value_info(t, helper.np_dtype_to_tensor_dtype(np.dtype(s.dtype)), list(s.shape))
              for t, s in graph.inputs.items()]
    outputs = []
    for t in graph.outputs:
        if t in graph.constants:   # an output that folded to a constant
            w.node("Identity", [w.const(f"{t}.value", graph.constants[t])], [t], f"{t}/constant")
            spec = graph.constants[t]
            outputs.append(helper.make_tensor_value_info(t, helper.np_dtype_to_tensor_dtype(spec.dtype), list(spec.shape)))
        else:
            s = graph.spec(t)
            outputs.append(helper.make_tensor_value_info(t, helper.np_dtype_to_tensor_dtype(np.dtype(s.dtype)),
                                                         list(s.shape)))
    g = helper.make_graph(w.nodes, graph.name, inputs, outputs, initializer=list(w.initializers.values()))
    versions = graph.meta.get("opsets", {})
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, int(versions.get(d, 1))) for d in sorted(w.domains)]
    model = helper.make_model(g, opset_imports=imports, producer_name=producer, producer_version=__version__)
    model.ir_version = max(MIN_IR_VERSION, helper.find_min_ir_version_for(list(model.opset_import)))
    for k, v in (model_metadata or {}).items():
        model.metadata_props.add(key=k, value=str(v))
    return model


def save(model, path):
    """Write ``model`` to ``path`` (weights inline; one file)."""
    onnx.save_model(model, str(path))
