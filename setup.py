"""Build the Cython kernels in ``kernels_pyx/`` into ``workbench/_kernels/``.

Every ``kernels_pyx/*.pyx`` becomes ``workbench._kernels.<name>``.  The default build is portable
(``-O3``, no ``-march=native``): ISA-specific code paths are separate routines chosen at run time.
The flags are written to ``workbench/_kernels/build_info.json`` because they are part of the
machine fingerprint that the profile database is keyed by.
"""
import json
import os
import sys
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).parent
COMPILE_ARGS = ["-O3", "-fopenmp", "-fno-math-errno"]
LINK_ARGS = ["-fopenmp"]
if sys.platform == "darwin":  # Apple clang spells OpenMP differently; Linux is the tested target.
    COMPILE_ARGS = ["-O3", "-Xpreprocessor", "-fopenmp"]
    LINK_ARGS = ["-lomp"]


class BuildExtRecordingFlags(build_ext):
    def run(self):
        super().run()
        info = {"compile_args": COMPILE_ARGS, "link_args": LINK_ARGS,
                "cython": __import__("Cython").__version__, "numpy": numpy.__version__}
        for root in {Path(self.build_lib), HERE}:
            out = root / "workbench" / "_kernels" / "build_info.json"
            if out.parent.is_dir():
                out.write_text(json.dumps(info, indent=1))


def extensions():
    exts = []
    for pyx in sorted((HERE / "kernels_pyx").glob("*.pyx")):
        exts.append(Extension(
            f"workbench._kernels.{pyx.stem}",
            [os.path.relpath(pyx, HERE)],
            include_dirs=[numpy.get_include(), str(HERE / "kernels_pyx")],
            extra_compile_args=COMPILE_ARGS,
            extra_link_args=LINK_ARGS,
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        ))
    return cythonize(exts, language_level=3, compiler_directives={
        "boundscheck": False, "wraparound": False, "cdivision": True, "initializedcheck": False})


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExtRecordingFlags})
