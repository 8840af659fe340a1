"""Encode a layer's fused epilogue (bias, residual, activation, post-activation affine) for the Cython kernels.

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
    """``code, p0, p1``, an optional per-channel ``slope`` (float32, C elements) and an optional
    ``post`` affine after the activation, ``(scale, shift)`` (float32, C elements each)."""

    __slots__ = ("code", "p0", "p1", "slope", "post")

    def __init__(self, code=0, p0=0.0, p1=0.0, slope=None, post=None):
        self.code, self.p0, self.p1, self.slope, self.post = code, float(p0), float(p1), slope, post

    def __repr__(self):
        return f"Epilogue(code={self.code}, p0={self.p0}, p1={self.p1}, slope={None if self.slope is None else self.slope.shape})"


#: Codes after which a kernel's register epilogue can apply a post-activation affine (our
#: AVX-512 GEMM's: ReLU, clip, leaky ReLU, hard sigmoid, hard swish).
POST_AFFINE_CODES = (1, 2, 3, 4, 5)


def encode(layer, channels, channel_axis=1, rank=4, extended=False, post_affine=False):
    """The :class:`Epilogue` of ``layer`` whose output has ``channels`` channels, or None.

    ``extended``: the caller's kernel also knows :data:`EXTENDED` (eltwise.pyx does).
    ``post_affine``: the caller's kernel applies a ``post_affine`` (``passes/fuse_post_affine.py``)
    after an activation of :data:`POST_AFFINE_CODES`; without it such a layer gets None.
    """
    post = layer.attrs.get("post_affine")
    ep = _encode(layer, channels, channel_axis, rank, extended)
    if post is None or ep is None:
        return ep
    if not post_affine or ep.code not in POST_AFFINE_CODES:
        return None
    ep.post = (post["scale"], post["shift"])
    return ep


def _encode(layer, channels, channel_axis, rank, extended):
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
