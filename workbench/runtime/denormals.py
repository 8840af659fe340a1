"""Denormal floats flushed to zero for the span of a run.

An x86 core takes a microcode assist, around a hundred cycles, for each denormal operand or
result of a multiply-add.  Trained weights can hold thousands of denormals: on an Intel core one
1x1 convolution of PP-OCRv6's detector ran 250 times slower on them than on zeros.  OpenVINO
flushes them by default; ONNX Runtime has an option for it.  :func:`flushed` sets the calling
thread's flush-to-zero and denormals-are-zero modes for a run (the pool's workers take the
caller's mode with each job, ``kernels_pyx/wb_pool.h``) and restores them after, so that the
caller's own NumPy arithmetic is left as it was.  The results differ from an unflushed run only
where a value is below 1.2e-38 in magnitude.
"""
from __future__ import annotations

from contextlib import contextmanager

from .._kernels import _pool


@contextmanager
def flushed(on=True):
    """Run the body with denormals flushed to zero (``on``) or kept (``on`` False)."""
    old = _pool.set_flush_denormals(on)
    try:
        yield
    finally:
        _pool.set_flush_denormals(old)
