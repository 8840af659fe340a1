"""Recurrent ops: LSTM (CRNN text recognisers end in a bidirectional one)."""
import numpy as np

from .base import Op, check
from ..graph import TensorSpec

#: The activations ONNX's LSTM defaults to, the only ones supported: (gates, cell input, output).
DEFAULT_ACTIVATIONS = ["Sigmoid", "Tanh", "Tanh"]


def _sigmoid(x):
    # exp of -|x| only: no overflow warning, and 1 / (1 + e) stays accurate on both sides
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1, e) / (1 + e)


class LSTM(Op):
    """ONNX LSTM, gates in i, o, f, c order, with optional bias, sequence lengths, initial state,
    peepholes, ``clip`` and ``input_forget``; ``layout`` 0 (sequence first) or 1 (batch first).

    ``compute`` projects every time step's input at once (one matrix product per direction),
    then runs the recurrence step by step; a sequence shorter than the input (``sequence_lens``)
    stops where it ends: its later outputs are 0 and its final state is the one at its end.
    """

    weight_inputs = (1, 2, 3, 7)

    @classmethod
    def normalize(cls, node):
        acts = node.attr("activations", None)
        if acts is not None and [a.lower() for a in acts] != [a.lower() for a in DEFAULT_ACTIVATIONS] * (len(acts) // 3):
            node.fail(f"activations {acts} are not supported; only the default {DEFAULT_ACTIVATIONS}")
        direction = node.attr("direction", "forward")
        if direction not in ("forward", "reverse", "bidirectional"):
            node.fail(f"unknown direction {direction!r}")
        clip = node.attr("clip", None)
        return {"hidden_size": int(node.attr("hidden_size")), "direction": direction,
                "clip": None if clip is None else float(clip), "input_forget": int(node.attr("input_forget", 0)),
                "layout": int(node.attr("layout", 0))}

    @classmethod
    def infer(cls, layer, specs):
        a = layer.attrs
        x, w, r = specs[0].shape, specs[1].shape, specs[2].shape
        dirs, hid = (2 if a["direction"] == "bidirectional" else 1), a["hidden_size"]
        check(len(x) == 3, layer, f"X must be 3-D, got {x}")
        seq, batch = (x[0], x[1]) if a["layout"] == 0 else (x[1], x[0])
        check(w == (dirs, 4 * hid, x[2]), layer, f"W must be {(dirs, 4 * hid, x[2])}, got {w}")
        check(r == (dirs, 4 * hid, hid), layer, f"R must be {(dirs, 4 * hid, hid)}, got {r}")
        state = (dirs, batch, hid) if a["layout"] == 0 else (batch, dirs, hid)
        for i, name, shape in ((3, "B", (dirs, 8 * hid)), (4, "sequence_lens", (batch,)),
                               (5, "initial_h", state), (6, "initial_c", state), (7, "P", (dirs, 3 * hid))):
            if len(specs) > i and specs[i] is not None:
                check(specs[i].shape == shape, layer, f"{name} must be {shape}, got {specs[i].shape}")
        dt = specs[0].dtype
        y = (seq, dirs, batch, hid) if a["layout"] == 0 else (batch, seq, dirs, hid)
        return [TensorSpec(y, dt), TensorSpec(state, dt), TensorSpec(state, dt)][:len(layer.outputs)]

    @classmethod
    def compute(cls, layer, args):
        a = layer.attrs
        args = list(args) + [None] * (8 - len(args))
        x, w, r, b, lens, h0, c0, p = args
        hid = a["hidden_size"]
        if a["layout"] == 1:
            x = x.transpose(1, 0, 2)
            h0 = None if h0 is None else h0.transpose(1, 0, 2)
            c0 = None if c0 is None else c0.transpose(1, 0, 2)
        seq, batch = x.shape[:2]
        dirs = w.shape[0]
        lens = np.full(batch, seq, np.int64) if lens is None else np.asarray(lens, np.int64)
        y = np.zeros((seq, dirs, batch, hid), x.dtype)
        hs, cs = np.zeros((dirs, batch, hid), x.dtype), np.zeros((dirs, batch, hid), x.dtype)
        for d in range(dirs):
            reverse = a["direction"] == "reverse" or d == 1
            bias = np.zeros(8 * hid, x.dtype) if b is None else b[d]
            xw = x @ w[d].T + (bias[:4 * hid] + bias[4 * hid:])   # (seq, batch, 4 hid)
            h = np.zeros((batch, hid), x.dtype) if h0 is None else h0[d].copy()
            c = np.zeros((batch, hid), x.dtype) if c0 is None else c0[d].copy()
            pi, po, pf = (np.zeros(hid, x.dtype),) * 3 if p is None else np.split(p[d], 3)
            for step in range(seq):
                live = step < lens                                  # (batch,)
                t = np.where(live, lens - 1 - step, 0) if reverse else np.full(batch, step)
                g = xw[t, np.arange(batch)] + h @ r[d].T
                if a["clip"] is not None:
                    g = np.clip(g, -a["clip"], a["clip"])
                gi, go, gf, gc = np.split(g, 4, axis=1)
                i = _sigmoid(gi + pi * c)
                f = 1 - i if a["input_forget"] else _sigmoid(gf + pf * c)
                c_new = f * c + i * np.tanh(gc)
                o = _sigmoid(go + po * c_new)
                h_new = o * np.tanh(c_new)
                keep = live[:, None]
                c, h = np.where(keep, c_new, c), np.where(keep, h_new, h)
                y[t[live], d, np.flatnonzero(live)] = h_new[live]
            hs[d], cs[d] = h, c
        if a["layout"] == 1:
            y, hs, cs = y.transpose(2, 0, 1, 3), hs.transpose(1, 0, 2), cs.transpose(1, 0, 2)
        return [v.astype(x.dtype, copy=False) for v in (y, hs, cs)][:len(layer.outputs)]
