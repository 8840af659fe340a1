"""``cpu:bfloat16:{nchw,nhwc}/direct`` for EltwiseChain, and for the single Add/Sub/Mul/Div
layers no chain took: the float32 chain's kernel (``kernels_pyx/eltwise_chain.pyx``) on bfloat16
activations, a lone binary layer run as a chain of one step.

Each block of an input is widened to float32 as it is read, the steps run in float32 exactly as
the float32 routine's do, and the output is rounded once to bfloat16 as it is stored; constants
(a per-channel scale, a bias) stay float32.  Elementwise chains move bytes, not arithmetic: in
bfloat16 they move half as many, and a chain between bfloat16 convolutions (a squeeze-excite's
``x * se + x``, a detection neck's ``+ upsampled``) needs no cast out and back.
"""
from types import SimpleNamespace

from ..ir.graph import NCHW, NHWC
from ..ir.passes.fuse_eltwise_chain import ACTIVATIONS, BINARY
from .eltwise_chain import _Chain
from .tensor_ops_bf16 import _Bf16Moves


class _ChainBf16(_Bf16Moves, _Chain, register=False):
    @classmethod
    def applies(cls, layer, specs):
        return cls.available() and super().applies(layer, specs)


class ChainNchwBf16(_ChainBf16):
    layout = NCHW


class ChainNhwcBf16(_ChainBf16):
    layout = NHWC
    strided_in = strided_out = True


def as_chain(layer):
    """A binary layer seen as a one-step EltwiseChain: its inputs in order, its fused activation
    the step's (what ``passes/fuse_eltwise_chain.chain_layer`` makes of a group of one)."""
    step = {"op": layer.op, "args": [0, 1]}
    for key in ("activation", "activation_params"):
        if key in layer.attrs:
            step[key] = layer.attrs[key]
    return SimpleNamespace(name=layer.name, op="EltwiseChain", inputs=layer.inputs, outputs=layer.outputs,
                           attrs={"steps": [step]}, consts=layer.consts, out_specs=layer.out_specs)


class _BinaryBf16(_ChainBf16, register=False):
    """A lone Add/Sub/Mul/Div (a squeeze-excite's ``x * se``, a residual add no chain joined)
    between bfloat16 layers: without it the plan casts out to float32 and back around it."""

    op = BINARY

    @classmethod
    def applies(cls, layer, specs):
        return (len(layer.inputs) == 2 and len(layer.outputs) == 1 and not layer.attrs.get("post_affine")
                and layer.attrs.get("activation", "Relu") in ACTIVATIONS and super().applies(as_chain(layer), specs))

    @classmethod
    def prepare(cls, layer):
        return super().prepare(as_chain(layer))

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        super().run(as_chain(layer), state, args, outs, num_threads)

    @classmethod
    def bind(cls, layer, state, args, outs):
        return super().bind(as_chain(layer), state, args, outs)


class BinaryNchwBf16(_BinaryBf16):
    layout = NCHW


class BinaryNhwcBf16(_BinaryBf16):
    layout = NHWC
    strided_in = strided_out = True
