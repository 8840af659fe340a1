"""What this CPU can do: instruction-set flags, for routines built in ISA-specific variants."""
from __future__ import annotations

import functools
import importlib
import platform


@functools.lru_cache(maxsize=None)
def flags() -> frozenset:
    """CPU feature flags (Linux ``/proc/cpuinfo``; empty elsewhere, which keeps to baseline code)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


#: The flags each compiled ISA variant assumes (see ISA_FLAGS in setup.py).
ISA_REQUIRES = {
    "avx2": {"avx2", "fma", "f16c"},
    "avx512": {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx2", "fma", "f16c"},
}
ISA_REQUIRES["avx512bf16"] = ISA_REQUIRES["avx512"] | {"avx512_bf16"}
ISA_REQUIRES["amx"] = ISA_REQUIRES["avx512bf16"] | {"amx_tile", "amx_bf16"}
ISA_REQUIRES["avx512vnni"] = ISA_REQUIRES["avx512"] | {"avx512_vnni"}
ISA_REQUIRES["amxint8"] = ISA_REQUIRES["avx512vnni"] | {"amx_tile", "amx_int8"}


def supports(isa: str) -> bool:
    return ISA_REQUIRES[isa] <= flags()


@functools.lru_cache(maxsize=None)
def kernel_module(name: str, isa: str | None = None):
    """``workbench._kernels.<name>[_<isa>]`` if built and runnable on this CPU, else None."""
    if isa is not None and not supports(isa):
        return None
    try:
        return importlib.import_module(f"workbench._kernels.{name}" + (f"_{isa}" if isa else ""))
    except ImportError:
        return None


def best_module(name: str):
    """The fastest built variant of ``workbench._kernels.<name>`` that this CPU runs."""
    for isa in ("avx512", "avx2", None):
        module = kernel_module(name, isa)
        if module is not None:
            return module
    raise ImportError(f"workbench._kernels.{name} is not built; run `python setup.py build_ext --inplace`")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
