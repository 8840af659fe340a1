"""Real third-party models, fetched from the PyPI packages that ship them, pinned and hashed.

    python benchmarks/realmodels.py                 # list them
    python benchmarks/realmodels.py NAME [NAME...]  # fetch into the cache, print the paths
    python benchmarks/realmodels.py --all

Weights are never committed and never downloaded at run time from a model hub: each model is a
file inside one pinned wheel, fetched with ``pip download --no-deps`` (PyPI is the one source
this project may reach), checked against the wheel's SHA-256, extracted, and checked against the
model's own SHA-256.  The cache is ``$WORKBENCH_MODEL_CACHE``, else
``~/.cache/routine-workbench/models``; a cached file is re-hashed before it is trusted.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RealModel:
    name: str
    package: str
    version: str
    wheel: str            # the wheel's file name, as pip saves it
    wheel_sha256: str
    member: str           # the model's path inside the wheel
    sha256: str
    what: str
    resolution: object = None   # the input size the benchmarks use where the model's is symbolic


_RAPIDOCR = dict(package="rapidocr-onnxruntime", version="1.4.4",
                 wheel="rapidocr_onnxruntime-1.4.4-py3-none-any.whl",
                 wheel_sha256="971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf")

MODELS = {m.name: m for m in [
    RealModel("ppocr_v4_det", member="rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
              sha256="d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
              what="PaddleOCR v4 text detector (DB, MobileNetV3 backbone), Paddle2ONNX export",
              resolution=(640, 640), **_RAPIDOCR),
    RealModel("ppocr_v4_rec", member="rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
              sha256="48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
              what="PaddleOCR v4 text recogniser (SVTR-LCNet), Paddle2ONNX export",
              resolution=(48, 320), **_RAPIDOCR),
    RealModel("ppocr_mobile_v2_cls", member="rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
              sha256="e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
              what="PaddleOCR text-line orientation classifier (MobileNetV3 small), Paddle2ONNX export",
              resolution=(48, 192), **_RAPIDOCR),
]}


class FetchError(RuntimeError):
    pass


def cache_dir():
    return Path(os.environ.get("WORKBENCH_MODEL_CACHE", Path.home() / ".cache" / "routine-workbench" / "models"))


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download_wheel(m, into):
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "-q", "-d", str(into), f"{m.package}=={m.version}"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheel = Path(into) / m.wheel
    if done.returncode != 0 or not wheel.is_file():
        raise FetchError(f"{m.name}: pip could not download {m.package}=={m.version}: {done.stderr.strip()[-500:]}")
    got = _sha256(wheel)
    if got != m.wheel_sha256:
        raise FetchError(f"{m.name}: {m.wheel} has SHA-256 {got}, expected {m.wheel_sha256}: refusing it")
    return wheel


def fetch(name):
    """The path of real model ``name`` in the cache, downloading and checking it when needed."""
    if name not in MODELS:
        raise FetchError(f"unknown real model {name!r}; known: {', '.join(MODELS)}")
    m = MODELS[name]
    target = cache_dir() / m.package / m.version / Path(m.member).name
    if target.is_file() and _sha256(target) == m.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _download_wheel(m, tmp)
        with zipfile.ZipFile(wheel) as z:
            try:
                data = z.read(m.member)
            except KeyError:
                raise FetchError(f"{m.name}: {m.wheel} holds no {m.member}") from None
        if hashlib.sha256(data).hexdigest() != m.sha256:
            raise FetchError(f"{m.name}: {m.member} in {m.wheel} does not have the pinned SHA-256 {m.sha256}")
        partial = target.with_suffix(".partial")
        partial.write_bytes(data)
        partial.replace(target)   # atomic: a concurrent reader never sees half a file
    return target


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*")
    p.add_argument("--all", action="store_true")
    args = p.parse_args(argv)
    names = list(MODELS) if args.all else args.names
    if not names:
        for m in MODELS.values():
            print(f"{m.name:22s} {m.package}=={m.version}  {m.what}")
        return 0
    try:
        for name in names:
            print(f"{name}\t{fetch(name)}")
    except FetchError as e:
        print(f"realmodels: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
