"""Encode a layer's fused epilogue (bias, residual, activation) for the Cython kernels.

Codes match ``kernels_pyx/_epilogue.pxd`` (0-8, every kernel) and ``kernels_pyx/eltwise.pyx``
(9-11, SiLU and GELU: the elementwise and convolution kernels, through ``act_run`` of
``conv_gemm.pxd``, not the GEMM/MatMul/ConvTranspose ones, so :func:`encode` gives them only when
asked with ``extended=True``).  :func:`encode` returns None when a kernel cannot express the activation
(e.g. a PRelu slope that is not per-channel): such layers stay with routines that can, ultimately
the reference.
"""
import numpy as np

CODES = {None: 0, "Relu": 1, "Clip": 2, "LeakyRelu": 3, "HardSigmoid": 4, "HardSwish": 5, "Sigmoid": 6,
         "PRelu": 7, "Tanh": 8}
#: Codes the elementwise kernels (eltwise.pyx) add to those every kernel knows.
EXTENDED = {"Silu": 9, "Gelu": 10, "GeluTanh": 11}


class Epilogue:
    """``code, p0, p1`` and an optional per-channel ``slope`` (float32, C elements)."""

    __slots__ = ("code", "p0", "p1", "slope")

    def __init__(self, code=0, p0=0.0, p1=0.0, slope=None):
        self.code, self.p0, self.p1, self.slope = code, float(p0), float(p1), slope

    def __repr__(self):
        return f"Epilogue(code={self.code}, p0={self.p0}, p1={self.p1}, slope={None if self.slope is None else self.slope.shape})"


def encode(layer, channels, channel_axis=1, rank=4, extended=False):
    """The :class:`Epilogue` of ``layer`` whose output has ``channels`` channels, or None.

    ``extended``: the caller's kernel also knows :data:`EXTENDED` (eltwise.pyx does).
    """
    act = layer.attrs.get("activation")
    p = layer.attrs.get("activation_params", {})
    if extended and act in ("Silu", "Gelu"):
        return Epilogue(EXTENDED["GeluTanh" if p.get("approximate") == "tanh" else act])
    if act not in CODES:
        return None
    if act == "Clip":
        return Epilogue(2, max(p["min"], np.finfo(np.float32).min), min(p["max"], np.finfo(np.float32).max))
    if act == "LeakyRelu":
        return Epilogue(3, p["alpha"])
    if act == "HardSigmoid":
        return Epilogue(4, p["alpha"], p["beta"])
    if act == "PRelu":
        if rank <= channel_axis:
            return None
        slope = np.asarray(p["slope"], np.float32)
        # Per-channel only: the slope broadcast against the output must vary along the channel axis alone.
        full = np.ones([1] * rank, np.float32)
        try:
            b = np.broadcast_to(slope, np.broadcast_shapes(slope.shape, full.shape))
        except ValueError:
            return None
        if b.ndim != rank:
            return None
        squeezed = b.reshape(-1) if b.size in (1, channels) else None
        if squeezed is None or (b.size == channels and b.shape[channel_axis] != channels):
            return None
        return Epilogue(7, slope=np.ascontiguousarray(np.broadcast_to(squeezed, (channels,)), np.float32))
    return Epilogue(CODES[act])
