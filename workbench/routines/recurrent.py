"""``cpu:float32:nchw/direct`` for LSTM: the input projection as one matrix product per direction,
then the recurrence step by step on buffers bound once: each step's ``h @ R^T + (x W^T + b)[t]``
runs on our AVX-512 GEMM (``gemm512``'s 1x1-convolution kernel, the projection as its residual),
split over the kernel pool's threads, and the gates and states are one call of
``kernels_pyx/recurrent.pyx``.

A step reads the whole recurrent weight matrix (4 MB at hidden size 512, more than one core's
L2): the recurrence is bound by memory.  Each direction's steps run on all threads, so each core
streams its share of it, and a step's product is cut in two column halves taken in alternating
order, so that the half a step read last (still in L2) is the one the next step reads first.
Without AVX-512 the product is NumPy's.  Sequence lengths, peepholes, ``clip``,
``input_forget`` and batch-first layout are left to the reference (the exporters we know do not
write them).
"""
import numpy as np

from ..ir.ops.recurrent import LSTM
from . import Routine
from .eltwise import all_float32, kernels


def _gemm():
    """gemm512's AVX-512 build, or None where this CPU or build lacks it."""
    from ..runtime import cpu
    return cpu.kernel_module("gemm512", "avx512") if cpu.supports("avx512") else None


def _halves(hid):
    """The two column slices of the gates (4 hidden) that each step's product is cut in."""
    return slice(0, 2 * hid), slice(2 * hid, 4 * hid)


class _Direction:
    """One direction's recurrence on fixed buffers."""

    def __init__(self, x, wt, rt, packed, bias, h0, c0, y, reverse, scratch=None):
        """``packed``: (W^T, R^T) packed for gemm512, or None; ``scratch``: the GEMMs' workspace;
        ``rt`` None where a subclass binds the products itself (it sets :attr:`project` and
        :attr:`steps`; the hidden size is then the bias's quarter)."""
        seq, batch, _ = x.shape
        hid = rt.shape[0] if rt is not None else bias.shape[0] // 4
        self.x, self.wt, self.rt, self.bias = x, wt, rt, bias
        self.xw = np.empty((seq, batch, 4 * hid), np.float32)
        self.g = np.empty((batch, 4 * hid), np.float32)
        self.t = np.empty((batch, hid), np.float32)
        self.h, self.c = np.empty((batch, hid), np.float32), np.empty((batch, hid), np.float32)
        self.h0, self.c0, self.reverse = h0, c0, reverse
        self.cell = kernels("recurrent").LstmCell(self.g, self.c, self.h, self.t, y)
        k = _gemm()
        self.steps = self.project = None
        if k is not None and packed is not None and x.flags.c_contiguous:   # reshaped as a view
            # the projection of every step at once, the bias fused; step s: g = h @ R^T + xw[s]
            self.project = k.Conv1x1Nhwc(x.reshape(1, 1, seq * batch, -1), packed[0], bias, None,
                                         self.xw.reshape(1, 1, seq * batch, -1), scratch=scratch)
            g4, h4 = self.g.reshape(1, 1, batch, -1), self.h.reshape(1, 1, batch, hid)
            self.steps = [[k.Conv1x1Nhwc(h4, packed[1][i], None, self.xw[s].reshape(1, 1, batch, -1)[..., cols],
                                         g4[..., cols], scratch=scratch) for i, cols in enumerate(_halves(hid))]
                          for s in range(seq)]

    def __call__(self, num_threads):
        if self.project is not None:
            self.project(num_threads)
        else:
            np.matmul(self.x, self.wt, out=self.xw)
            self.xw += self.bias
        self.h[...] = 0 if self.h0 is None else self.h0
        self.c[...] = 0 if self.c0 is None else self.c0
        seq = self.xw.shape[0]
        for step in range(seq):
            s = seq - 1 - step if self.reverse else step
            if self.steps is not None:
                # the column halves of R^T in turn, the one read last first: it is still in L2
                for half in (self.steps[s] if step % 2 == 0 else self.steps[s][::-1]):
                    half(num_threads)
            else:
                np.matmul(self.h, self.rt, out=self.g)
                self.g += self.xw[s]
            self.cell(s)
        return self.h, self.c


class LstmDirect(Routine):
    op = "LSTM"
    algo = "direct"
    priority = 10

    @classmethod
    def applies(cls, layer, specs):
        a = layer.attrs
        plain = (a["layout"] == 0 and a["clip"] is None and not a["input_forget"] and LSTM.default(layer)
                 and all(len(specs) <= i or specs[i] is None for i in (4, 7)))
        return plain and all_float32([s for s in specs[:4] + specs[5:7] if s is not None], layer.out_specs)

    @classmethod
    def prepare(cls, layer):
        w, r = layer.consts[1], layer.consts[2]
        hid = layer.attrs["hidden_size"]
        rt = [np.ascontiguousarray(r[d].T) for d in range(r.shape[0])]
        k = _gemm()
        return {"wt": [np.ascontiguousarray(w[d].T) for d in range(w.shape[0])], "rt": rt,
                "packed": [None if k is None else (k.pack_b(np.ascontiguousarray(w[d].T)),
                                                   [k.pack_b(np.ascontiguousarray(rt[d][:, c])) for c in _halves(hid)])
                           for d in range(w.shape[0])],
                "bias": cls._gate_bias(layer)}

    @staticmethod
    def _gate_bias(layer):
        """Per direction, the gates' one bias: ONNX's input and recurrent biases summed (4 hidden)."""
        w, b, hid = layer.consts[1], layer.consts.get(3), layer.attrs["hidden_size"]
        return [np.zeros(4 * hid, np.float32) if b is None else (b[d, :4 * hid] + b[d, 4 * hid:]).astype(np.float32)
                for d in range(w.shape[0])]

    @classmethod
    def workspace(cls, layer, specs, num_threads):
        k = _gemm()   # the GEMMs' packed blocks of A, shared by the directions and steps in turn
        return k.conv1x1_scratch_bytes(num_threads) if k is not None else 0

    @classmethod
    def bind(cls, layer, state, args, outs):
        return cls._bound(layer, state, args, outs)

    @classmethod
    def _direction(cls, state, d, x, h0, c0, y, reverse):
        """Direction ``d``'s recurrence bound on these arrays (``h0``, ``c0``, ``y`` its own, or None)."""
        return _Direction(x, state["wt"][d], state["rt"][d], state["packed"][d], state["bias"][d], h0, c0, y,
                          reverse, state.get("workspace"))

    @classmethod
    def _bound(cls, layer, state, args, outs):
        x = args[0]
        h0 = args[5] if len(args) > 5 else None
        c0 = args[6] if len(args) > 6 else None
        outs = list(outs) + [None] * (3 - len(outs))
        y, yh, yc = outs
        dirs = [cls._direction(state, d, x, None if h0 is None else h0[d], None if c0 is None else c0[d],
                               None if y is None else y[:, d], layer.attrs["direction"] == "reverse" or d == 1)
                for d in range(len(state["bias"]))]

        def call(num_threads):
            for d, (h, c) in enumerate([direction(num_threads) for direction in dirs]):
                if yh is not None:
                    yh[d] = h
                if yc is not None:
                    yc[d] = c
        return call

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        cls._bound(layer, state, args, outs)(num_threads)
