"""Recurrent ops: LSTM, GRU and RNN (CRNN text recognisers end in a bidirectional LSTM; voice
activity detectors run GRUs and LSTMs over audio frames).

The three share everything but the cell: the input projection of every time step at once (one
matrix product per direction), then the recurrence step by step; a sequence shorter than the
input (``sequence_lens``) stops where it ends (a reverse one starts at its own end): its later
outputs are 0 and its final state is the one at its end.  ``layout`` 0 (sequence first) or 1
(batch first); every activation the ONNX spec lists, with its ``activation_alpha`` and
``activation_beta``.
"""
import numpy as np

from .base import Op, check
from ..graph import TensorSpec


def _sigmoid(x):
    # exp of -|x| only: no overflow warning, and 1 / (1 + e) stays accurate on both sides
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1, e) / (1 + e)


def _elu(x, a, b):
    with np.errstate(over="ignore"):
        return np.where(x >= 0, x, a * (np.exp(np.minimum(x, 0)) - 1))


def _softplus(x):
    with np.errstate(over="ignore"):
        return np.log1p(np.exp(x))


#: ONNX's recurrent activations by lower-case name: ``(f(x, alpha, beta), default alpha, default
#: beta)``, None where the function takes no such parameter (and consumes none of the attribute's).
ACTIVATIONS = {
    "sigmoid": (lambda x, a, b: _sigmoid(x), None, None),
    "tanh": (lambda x, a, b: np.tanh(x), None, None),
    "relu": (lambda x, a, b: np.maximum(x, 0), None, None),
    "affine": (lambda x, a, b: a * x + b, 1.0, 0.0),
    "leakyrelu": (lambda x, a, b: np.where(x >= 0, x, a * x), 0.01, None),
    "thresholdedrelu": (lambda x, a, b: np.where(x > a, x, 0), 1.0, None),
    "scaledtanh": (lambda x, a, b: a * np.tanh(b * x), 1.0, 1.0),
    "hardsigmoid": (lambda x, a, b: np.clip(a * x + b, 0, 1), 0.2, 0.5),
    "elu": (_elu, 1.0, None),
    "softsign": (lambda x, a, b: x / (1 + np.abs(x)), None, None),
    # as ONNX Runtime computes it: log(1 + e^x), infinite where e^x overflows float32
    "softplus": (lambda x, a, b: _softplus(x), None, None),
}


def activation(entry, x):
    """``entry`` (``(name, alpha, beta)`` of :func:`_activations`) applied to ``x``, in ``x``'s dtype."""
    name, a, b = entry
    return np.asarray(ACTIVATIONS[name][0](x, a, b)).astype(x.dtype, copy=False)


class _Recurrent(Op, register=False):
    """What LSTM, GRU and RNN share: the attributes, shapes and the loop over time and directions."""

    #: Gates a cell computes (weight rows per hidden unit), states it carries (h, and LSTM's c).
    gates = 1
    states = 1
    #: The default activations of one direction.
    default_activations = ()
    weight_inputs = (1, 2, 3)

    @classmethod
    def _activations(cls, node, dirs):
        names = node.attr("activations", None)
        per = len(cls.default_activations)
        if names is None:
            names = list(cls.default_activations) * dirs
        names = [str(n).lower() for n in names]
        if len(names) == per and dirs == 2:
            names = names * 2   # one direction's list stands for both
        if len(names) != per * dirs:
            node.fail(f"activations {names} must name {per} function(s) per direction ({per * dirs} in all)")
        unknown = sorted({n for n in names if n not in ACTIVATIONS})
        if unknown:
            node.fail(f"activation(s) {unknown} are not ones the ONNX spec lists ({', '.join(sorted(ACTIVATIONS))})")
        alphas = iter(node.attr("activation_alpha", []) or [])
        betas = iter(node.attr("activation_beta", []) or [])
        entries = []
        for n in names:   # values consumed in order by the functions that take them
            _, da, db = ACTIVATIONS[n]
            a = None if da is None else float(next(alphas, da))
            b = None if db is None else float(next(betas, db))
            entries.append((n, a, b))
        return [entries[d * per:(d + 1) * per] for d in range(dirs)]

    @classmethod
    def normalize(cls, node):
        direction = node.attr("direction", "forward")
        if direction not in ("forward", "reverse", "bidirectional"):
            node.fail(f"unknown direction {direction!r}")
        clip = node.attr("clip", None)
        dirs = 2 if direction == "bidirectional" else 1
        return {"hidden_size": int(node.attr("hidden_size")), "direction": direction,
                "clip": None if clip is None else float(clip), "layout": int(node.attr("layout", 0)),
                "activations": cls._activations(node, dirs)}

    @classmethod
    def _optional_inputs(cls, hid, batch, state):
        """``(index, name, shape)`` of the optional inputs after R."""
        return [(3, "B", (2 * cls.gates * hid,)), (4, "sequence_lens", (batch,)), (5, "initial_h", state)]

    @classmethod
    def infer(cls, layer, specs):
        a = layer.attrs
        x, w, r = specs[0].shape, specs[1].shape, specs[2].shape
        dirs, hid = (2 if a["direction"] == "bidirectional" else 1), a["hidden_size"]
        check(len(x) == 3, layer, f"X must be 3-D, got {x}")
        seq, batch = (x[0], x[1]) if a["layout"] == 0 else (x[1], x[0])
        g = cls.gates * hid
        check(w == (dirs, g, x[2]), layer, f"W must be {(dirs, g, x[2])}, got {w}")
        check(r == (dirs, g, hid), layer, f"R must be {(dirs, g, hid)}, got {r}")
        state = (dirs, batch, hid) if a["layout"] == 0 else (batch, dirs, hid)
        for i, name, shape in cls._optional_inputs(hid, batch, state):
            if name in ("B", "P"):
                shape = (dirs,) + shape
            if len(specs) > i and specs[i] is not None:
                check(specs[i].shape == shape, layer, f"{name} must be {shape}, got {specs[i].shape}")
        dt = specs[0].dtype
        y = (seq, dirs, batch, hid) if a["layout"] == 0 else (batch, seq, dirs, hid)
        return ([TensorSpec(y, dt)] + [TensorSpec(state, dt)] * cls.states)[:len(layer.outputs)]

    @classmethod
    def _cell(cls, layer, d, args, xw_t, state):
        """One step of direction ``d``: the new states (h first) from ``xw_t``, the input's
        projection plus W's bias (batch, gates * hid), and ``state``."""
        raise NotImplementedError

    @classmethod
    def compute(cls, layer, args):
        a = layer.attrs
        args = list(args) + [None] * (8 - len(args))
        x, w, b, lens = args[0], args[1], args[3], args[4]
        inits = list(args[5:5 + cls.states])
        hid = a["hidden_size"]
        if a["layout"] == 1:
            x = x.transpose(1, 0, 2)
            inits = [None if s is None else s.transpose(1, 0, 2) for s in inits]
        seq, batch = x.shape[:2]
        dirs = w.shape[0]
        lens = np.full(batch, seq, np.int64) if lens is None else np.asarray(lens, np.int64)
        y = np.zeros((seq, dirs, batch, hid), x.dtype)
        finals = [np.zeros((dirs, batch, hid), x.dtype) for _ in range(cls.states)]
        g = cls.gates * hid
        for d in range(dirs):
            reverse = a["direction"] == "reverse" or d == 1
            wb = np.zeros(g, x.dtype) if b is None else b[d][:g]
            xw = x @ w[d].T + wb                                  # (seq, batch, gates * hid)
            state = [np.zeros((batch, hid), x.dtype) if s is None else s[d].copy() for s in inits]
            for step in range(seq):
                live = step < lens                                  # (batch,)
                t = np.where(live, lens - 1 - step, 0) if reverse else np.full(batch, step)
                new = cls._cell(layer, d, args, xw[t, np.arange(batch)], state)
                keep = live[:, None]
                state = [np.where(keep, n, s) for n, s in zip(new, state)]
                y[t[live], d, np.flatnonzero(live)] = new[0][live]
            for k in range(cls.states):
                finals[k][d] = state[k]
        if a["layout"] == 1:
            y, finals = y.transpose(2, 0, 1, 3), [s.transpose(1, 0, 2) for s in finals]
        return [v.astype(x.dtype, copy=False) for v in [y] + finals][:len(layer.outputs)]

    @staticmethod
    def _clip(layer, v):
        c = layer.attrs["clip"]
        return v if c is None else np.clip(v, -c, c)

    @classmethod
    def default(cls, layer):
        """Whether ``layer`` uses its op's default activations in every direction (what the fast
        routines compute)."""
        return all([e[0] for e in acts] == [n.lower() for n in cls.default_activations]
                   for acts in layer.attrs["activations"])


class LSTM(_Recurrent):
    """ONNX LSTM, gates in i, o, f, c order, with optional bias, sequence lengths, initial state,
    peepholes, ``clip`` and ``input_forget``."""

    gates, states = 4, 2
    default_activations = ("Sigmoid", "Tanh", "Tanh")
    weight_inputs = (1, 2, 3, 7)

    @classmethod
    def normalize(cls, node):
        return {**super().normalize(node), "input_forget": int(node.attr("input_forget", 0))}

    @classmethod
    def _optional_inputs(cls, hid, batch, state):
        return super()._optional_inputs(hid, batch, state) + [(6, "initial_c", state), (7, "P", (3 * hid,))]

    @classmethod
    def _cell(cls, layer, d, args, xw_t, state):
        h, c = state
        r, b, p = args[2], args[3], args[7]
        hid = layer.attrs["hidden_size"]
        f_, g_, h_ = layer.attrs["activations"][d]
        g = xw_t + h @ r[d].T + (0 if b is None else b[d][4 * hid:])
        g = cls._clip(layer, g)
        gi, go, gf, gc = np.split(g, 4, axis=1)
        pi, po, pf = (0, 0, 0) if p is None else np.split(p[d], 3)
        i = activation(f_, gi + pi * c)
        f = 1 - i if layer.attrs["input_forget"] else activation(f_, gf + pf * c)
        c_new = f * c + i * activation(g_, gc)
        o = activation(f_, go + po * c_new)
        return [o * activation(h_, c_new), c_new]


class GRU(_Recurrent):
    """ONNX GRU, gates in z, r, h order; ``linear_before_reset`` 0 (the reset gate scales the
    state before its recurrent product) or 1 (after it, with its bias)."""

    gates = 3
    default_activations = ("Sigmoid", "Tanh")

    @classmethod
    def normalize(cls, node):
        return {**super().normalize(node), "linear_before_reset": int(node.attr("linear_before_reset", 0))}

    @classmethod
    def _cell(cls, layer, d, args, xw_t, state):
        (h,) = state
        r, b = args[2], args[3]
        hid = layer.attrs["hidden_size"]
        f_, g_ = layer.attrs["activations"][d]
        rb = np.zeros(3 * hid, h.dtype) if b is None else b[d][3 * hid:]
        zr = xw_t[:, :2 * hid] + h @ r[d][:2 * hid].T + rb[:2 * hid]
        z, rr = np.split(activation(f_, cls._clip(layer, zr)), 2, axis=1)
        if layer.attrs["linear_before_reset"]:
            gh = xw_t[:, 2 * hid:] + rr * (h @ r[d][2 * hid:].T + rb[2 * hid:])
        else:
            gh = xw_t[:, 2 * hid:] + (rr * h) @ r[d][2 * hid:].T + rb[2 * hid:]
        ht = activation(g_, cls._clip(layer, gh))
        return [(1 - z) * ht + z * h]


class RNN(_Recurrent):
    """ONNX RNN: ``h = f(x W^T + h R^T + Wb + Rb)``."""

    default_activations = ("Tanh",)

    @classmethod
    def _cell(cls, layer, d, args, xw_t, state):
        (h,) = state
        r, b = args[2], args[3]
        hid = layer.attrs["hidden_size"]
        g = xw_t + h @ r[d].T + (0 if b is None else b[d][hid:])
        return [activation(layer.attrs["activations"][d][0], cls._clip(layer, g))]


class ReverseSequence(Op):
    """ONNX ReverseSequence: along ``time_axis``, each batch entry's first ``sequence_lens[b]``
    steps reversed, the rest kept (what a converter writes before a backward recurrence)."""

    @classmethod
    def normalize(cls, node):
        batch_axis, time_axis = int(node.attr("batch_axis", 1)), int(node.attr("time_axis", 0))
        if {batch_axis, time_axis} != {0, 1}:
            node.fail(f"batch_axis and time_axis must be 0 and 1 (one each), got {batch_axis} and {time_axis}")
        return {"batch_axis": batch_axis, "time_axis": time_axis}

    @classmethod
    def infer(cls, layer, specs):
        x, lens = specs[0], specs[1]
        check(len(x.shape) >= 2, layer, f"the input must have at least 2 dims, got {x.shape}")
        check(lens.shape == (x.shape[layer.attrs["batch_axis"]],), layer,
              f"sequence_lens must be ({x.shape[layer.attrs['batch_axis']]},), got {lens.shape}")
        return [TensorSpec(x.shape, x.dtype)]

    @classmethod
    def compute(cls, layer, args):
        x, lens = args[0], np.asarray(args[1], np.int64)
        b_ax, t_ax = layer.attrs["batch_axis"], layer.attrs["time_axis"]
        y = x.copy()
        steps = x.shape[t_ax]
        for b, n in enumerate(lens):
            n = int(min(max(n, 0), steps))
            src = [slice(None)] * x.ndim
            src[b_ax], src[t_ax] = b, slice(n - 1, None, -1) if n else slice(0, 0)
            dst = [slice(None)] * x.ndim
            dst[b_ax], dst[t_ax] = b, slice(0, n)
            y[tuple(dst)] = x[tuple(src)]
        return [y]
