"""``cpu:float32:nchw/direct`` for GRU and RNN: the input projection as one matrix product per
direction over every time step (W's bias fused), then the recurrence step by step on buffers
bound once: each step's product with R (BLAS), and for the GRU the gates, candidate and state in
one or two calls of ``kernels_pyx/recurrent.pyx``'s ``GruCell`` (``linear_before_reset`` 1, as
PyTorch and Keras export it: one product a step; 0: the reset state's product with R's h rows
between them); for the RNN a tanh of the sum.  The default activations, sequence-first layout,
no ``clip`` and no ``sequence_lens``; the rest is the reference's.
"""
import numpy as np

from ..ir.ops.recurrent import GRU, RNN
from . import Routine
from .eltwise import all_float32, kernels


class _RecurrentDirect(Routine, register=False):
    algo = "direct"
    priority = 10
    op_impl = None

    @classmethod
    def applies(cls, layer, specs):
        a = layer.attrs
        plain = (a["layout"] == 0 and a["clip"] is None and cls.op_impl.default(layer)
                 and (len(specs) <= 4 or specs[4] is None) and 1 in layer.consts and 2 in layer.consts)
        return plain and all_float32([s for i, s in enumerate(specs) if s is not None and i != 4], layer.out_specs)

    @staticmethod
    def _transposed(layer):
        """Per direction, W^T and R^T (input or hidden, gates x hidden), contiguous."""
        w, r = layer.consts[1], layer.consts[2]
        return {"wt": [np.ascontiguousarray(w[d].T, np.float32) for d in range(w.shape[0])],
                "rt": [np.ascontiguousarray(r[d].T, np.float32) for d in range(r.shape[0])]}

    @classmethod
    def _biases(cls, layer, gates):
        """Per direction, W's and R's biases (gates x hidden each)."""
        w, b, hid = layer.consts[1], layer.consts.get(3), layer.attrs["hidden_size"]
        n = gates * hid
        return [(np.zeros(n, np.float32), np.zeros(n, np.float32)) if b is None
                else (np.ascontiguousarray(b[d, :n], np.float32), np.ascontiguousarray(b[d, n:], np.float32))
                for d in range(w.shape[0])]

    @classmethod
    def run(cls, layer, state, args, outs, num_threads):
        cls._bound(layer, state, args, outs)(num_threads)

    @classmethod
    def _bound(cls, layer, state, args, outs):
        x = args[0]
        h0 = args[5] if len(args) > 5 else None
        outs = list(outs) + [None] * (2 - len(outs))
        y, yh = outs
        reverse = [layer.attrs["direction"] == "reverse" or d == 1 for d in range(len(state["wt"]))]
        dirs = [cls._direction(state, d, x, None if h0 is None else h0[d], None if y is None else y[:, d], reverse[d])
                for d in range(len(state["wt"]))]

        def call(num_threads):
            for d, direction in enumerate(dirs):
                h = direction()
                if yh is not None:
                    yh[d] = h
        return call


class GruDirect(_RecurrentDirect):
    op = "GRU"
    op_impl = GRU

    @classmethod
    def bind(cls, layer, state, args, outs):   # one per class: each binds its own steps
        return cls._bound(layer, state, args, outs)

    @classmethod
    def prepare(cls, layer):
        return {**cls._transposed(layer), "bias": cls._biases(layer, 3),
                "lbr": bool(layer.attrs["linear_before_reset"])}

    @classmethod
    def _direction(cls, state, d, x, h0, y, reverse):
        seq, batch, _ = x.shape
        wt, rt, (wb, rb), lbr = state["wt"][d], state["rt"][d], state["bias"][d], state["lbr"]
        hid = rt.shape[0]
        xw = np.empty((seq, batch, 3 * hid), np.float32)
        hr = np.empty((batch, 3 * hid), np.float32)
        h, zr = np.empty((batch, hid), np.float32), np.empty((batch, 2 * hid), np.float32)
        rh = np.empty((batch, hid), np.float32)
        cell = kernels("recurrent").GruCell(xw, hr, h, zr, y)
        rt_zr, rt_h = np.ascontiguousarray(rt[:, :2 * hid]), np.ascontiguousarray(rt[:, 2 * hid:])
        hr_zr, hr_h = hr[:, :2 * hid], hr[:, 2 * hid:]

        def run():
            np.matmul(x, wt, out=xw)
            np.add(xw, wb, out=xw)
            h[...] = 0 if h0 is None else h0
            for step in range(seq):
                s = seq - 1 - step if reverse else step
                if lbr:   # r scales h R_h^T + Rb_h: one product of h with all of R
                    np.matmul(h, rt, out=hr)
                    np.add(hr, rb, out=hr)
                    cell.gates(s)
                else:     # r scales h before its product with R's h rows
                    np.matmul(h, rt_zr, out=hr_zr)
                    np.add(hr_zr, rb[:2 * hid], out=hr_zr)
                    cell.gates(s)
                    cell.reset(rh)
                    np.matmul(rh, rt_h, out=hr_h)
                    np.add(hr_h, rb[2 * hid:], out=hr_h)
                cell.update(s, lbr)
            return h
        return run


class RnnDirect(_RecurrentDirect):
    op = "RNN"
    op_impl = RNN

    @classmethod
    def bind(cls, layer, state, args, outs):   # one per class: each binds its own steps
        return cls._bound(layer, state, args, outs)

    @classmethod
    def prepare(cls, layer):
        return {**cls._transposed(layer), "bias": [wb + rb for wb, rb in cls._biases(layer, 1)]}

    @classmethod
    def _direction(cls, state, d, x, h0, y, reverse):
        seq, batch, _ = x.shape
        wt, rt, bias = state["wt"][d], state["rt"][d], state["bias"][d]
        hid = rt.shape[0]
        xw = np.empty((seq, batch, hid), np.float32)
        h, g = np.empty((batch, hid), np.float32), np.empty((batch, hid), np.float32)

        def run():
            np.matmul(x, wt, out=xw)
            np.add(xw, bias, out=xw)
            h[...] = 0 if h0 is None else h0
            for step in range(seq):
                s = seq - 1 - step if reverse else step
                np.matmul(h, rt, out=g)
                np.add(g, xw[s], out=g)
                np.tanh(g, out=h)
                if y is not None:
                    y[s] = h
            return h
        return run
