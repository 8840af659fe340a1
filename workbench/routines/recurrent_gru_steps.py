"""GRU and RNN with their whole recurrence in C: the LSTM's step kernels (``kernels_pyx/wb_lstm.h``,
:mod:`.recurrent_steps`) on 3 and 1 gates a hidden unit.  Each direction's input projection is
one GEMM over every time step with the biases that do not wait for the step fused (the GRU's
z and r rows of Rb, the RNN's whole Rb); then every step's product with R, gates and state in one
kernel call, the directions side by side on the threads (``steps_dirs``) or each step shared out
over them (``steps_split``).  The GRU with ``linear_before_reset`` 1 (as PyTorch and Keras
export it; 0 stays on :class:`~.recurrent_gru.GruDirect`), the default activations, float32.
"""
import numpy as np

from .recurrent import _gemm
from .recurrent_gru import GruDirect, RnnDirect
from .recurrent_steps import _Float32


class _Cell(_Float32):
    @classmethod
    def workspace(cls, layer, specs, num_threads):
        k = _gemm()   # the projections' packed blocks of A
        return k.conv1x1_scratch_bytes(num_threads) if k is not None else 0

    @classmethod
    def _biases(cls, layer):
        """Per direction, ONNX's (Wb, Rb), gates x hidden each (zero where B is absent)."""
        w, b, n = layer.consts[1], layer.consts.get(3), cls.gates * layer.attrs["hidden_size"]
        zero = np.zeros(n, np.float32)
        return [(zero, zero) if b is None else (np.asarray(b[d, :n], np.float32), np.asarray(b[d, n:], np.float32))
                for d in range(w.shape[0])]


class _Gru(_Cell):
    kind, gates = "gru", 3

    @classmethod
    def applies(cls, layer, specs):
        return layer.attrs["linear_before_reset"] == 1 and super().applies(layer, specs)

    @classmethod
    def _gate_bias(cls, layer):
        hid = layer.attrs["hidden_size"]
        out = []
        for wb, rb in cls._biases(layer):
            fused = wb.copy()
            fused[:2 * hid] += rb[:2 * hid]   # r scales Rb's h rows with the product: they stay apart
            out.append(fused)
        return out

    @classmethod
    def _more_state(cls, layer):
        hid = layer.attrs["hidden_size"]
        return {"rb": [np.ascontiguousarray(rb[2 * hid:]) for _, rb in cls._biases(layer)]}


class _Rnn(_Cell):
    kind, gates = "rnn", 1

    @classmethod
    def _gate_bias(cls, layer):
        return [(wb + rb).astype(np.float32) for wb, rb in cls._biases(layer)]


class GruStepsDirs(_Gru, GruDirect):
    algo = "steps_dirs"
    priority = 10.2


class GruStepsSplit(_Gru, GruDirect):
    algo = "steps_split"
    priority = 10.1
    split = True


class RnnStepsDirs(_Rnn, RnnDirect):
    algo = "steps_dirs"
    priority = 10.2


class RnnStepsSplit(_Rnn, RnnDirect):
    algo = "steps_split"
    priority = 10.1
    split = True
