"""Build the Cython kernels in ``kernels_pyx/`` into ``workbench/_kernels/``.

Every ``kernels_pyx/*.pyx`` becomes ``workbench._kernels.<name>``.  The default build is portable
(``-O3``, no ``-march=native``).  A source whose first lines say ``# isa-variants: avx2, avx512``
is also compiled as ``<name>_avx2`` / ``<name>_avx512`` with those instruction sets enabled;
routines built on them check the CPU at run time (``workbench.runtime.cpu``) and the profiler picks.
The flags are written to ``workbench/_kernels/build_info.json`` because they are part of the
machine fingerprint that the profile database is keyed by.

``WB_ONLY=name1,name2`` builds only those extensions (for quick kernel iteration).
"""
import json
import os
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent
COMPILE_ARGS = ["-O3", "-fno-math-errno", "-pthread"]
ISA_FLAGS = {
    "avx2": ["-mavx2", "-mfma", "-mf16c"],
    "avx512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma", "-mf16c",
               "-mprefer-vector-width=512", "-mprfchw"],
}
ISA_FLAGS["avx512bf16"] = ISA_FLAGS["avx512"] + ["-mavx512bf16"]
ISA_FLAGS["amx"] = ISA_FLAGS["avx512bf16"] + ["-mamx-tile", "-mamx-bf16"]
ISA_FLAGS["avx512vnni"] = ISA_FLAGS["avx512"] + ["-mavx512vnni"]
ISA_FLAGS["amxint8"] = ISA_FLAGS["avx512vnni"] + ["-mamx-tile", "-mamx-int8"]
LINK_ARGS = ["-pthread"]


class BuildExtRecordingFlags(build_ext):
    def run(self):
        super().run()
        info = {"compile_args": COMPILE_ARGS, "link_args": LINK_ARGS, "isa_variants": ISA_FLAGS,
                "cython": __import__("Cython").__version__, "numpy": numpy.__version__,
                "kernel_sources": _sources_digest()}
        for root in {Path(self.build_lib), HERE}:
            out = root / "workbench" / "_kernels" / "build_info.json"
            if out.parent.is_dir():
                out.write_text(json.dumps(info, indent=1))


def _sources_digest():
    """A hash of the kernel sources: changed kernels time differently, so a rebuild from changed
    sources must not reuse the profile records of the old build."""
    import hashlib
    h = hashlib.sha256()
    for f in sorted((HERE / "kernels_pyx").glob("*")):
        if f.suffix in (".pyx", ".pxd", ".pxi", ".h", ".inc"):
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def _isa_variants(pyx):
    for line in pyx.read_text().splitlines()[:5]:
        if line.startswith("# isa-variants:"):
            return [v.strip() for v in line.split(":", 1)[1].split(",") if v.strip()]
    return []


#: Every C header: a change to one rebuilds the modules (Cython tracks .pxd files, not the
#: headers their extern blocks name, and an ISA variant's copied source does not change).
HEADERS = sorted(os.path.relpath(h, HERE) for h in (HERE / "kernels_pyx").glob("*.h"))


def _extension(name, source, flags):
    return Extension(f"workbench._kernels.{name}", [source], depends=HEADERS,
                     include_dirs=[numpy.get_include(), str(HERE / "kernels_pyx")],
                     extra_compile_args=COMPILE_ARGS + flags, extra_link_args=LINK_ARGS,
                     define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")])


def extensions():
    only = {n for n in os.environ.get("WB_ONLY", "").split(",") if n}
    exts = []
    variant_dir = HERE / "build" / "isa_src"
    for pyx in sorted((HERE / "kernels_pyx").glob("*.pyx")):
        if not only or pyx.stem in only:
            exts.append(_extension(pyx.stem, os.path.relpath(pyx, HERE), []))
        for isa in _isa_variants(pyx):
            name = f"{pyx.stem}_{isa}"
            if only and name not in only and pyx.stem not in only:
                continue
            # Cython names the module after its file: each variant gets its own copy of the source.
            variant_dir.mkdir(parents=True, exist_ok=True)
            copy = variant_dir / f"{name}.pyx"
            text = pyx.read_text()
            if not copy.exists() or copy.read_text() != text:
                copy.write_text(text)
            exts.append(_extension(name, os.path.relpath(copy, HERE), ISA_FLAGS[isa]))
    return cythonize(exts, language_level=3, include_path=[str(HERE / "kernels_pyx")], compiler_directives={
        "boundscheck": False, "wraparound": False, "cdivision": True, "initializedcheck": False})


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExtRecordingFlags})
