"""Compiled Cython kernels (built from ``kernels_pyx/``). Import the submodules directly."""
