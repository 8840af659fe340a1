"""``cpu:bfloat16:{nchw,nhwc}/direct`` for EltwiseChain: the float32 chain's kernel
(``kernels_pyx/eltwise_chain.pyx``) on bfloat16 activations.

Each block of an input is widened to float32 as it is read, the steps run in float32 exactly as
the float32 routine's do, and the output is rounded once to bfloat16 as it is stored; constants
(a per-channel scale, a bias) stay float32.  Elementwise chains move bytes, not arithmetic: in
bfloat16 they move half as many, and a chain between bfloat16 convolutions (a squeeze-excite's
``x * se + x``, a detection neck's ``+ upsampled``) needs no cast out and back.
"""
from ..ir.graph import NCHW, NHWC
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
