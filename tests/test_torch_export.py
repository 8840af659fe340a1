"""PyTorch -> ONNX -> workbench: small CNNs exported by ``torch.onnx.export``, checked like the zoo.

Each model is exported with the TorchScript exporter (``dynamo=False``, opsets 13 and 17; as-is and
"raw", i.e. without the exporter's own constant folding and Conv+BatchNorm fusion, so that our
importer and passes see the shape subgraphs and BatchNormalization nodes) and with the
``torch.export``-based exporter (``dynamo=True``, its default opset; as-is and with
``optimize=False``).  The file is imported with :func:`workbench.load` (fused), run with the
:class:`ReferenceExecutor` and compared with ONNX Runtime on the same file and with torch itself;
the fused graph is checked for the fusions each model should get.
"""
import warnings
from typing import Callable, NamedTuple

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch", reason="torch not installed: PyTorch export tests need the 2.13.0 CPU wheel")
ort = pytest.importorskip("onnxruntime")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import workbench  # noqa: E402
from workbench import ReferenceExecutor, ShapeError  # noqa: E402
from workbench.onnx_io.write import export_graph  # noqa: E402

RTOL = 1e-4
BATCH, RES = 2, (32, 48)

# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def conv_bn(cin, cout, k=3, stride=1, groups=1, act=nn.ReLU):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, act()) if act else nn.Sequential(*layers)


class FlattenView(nn.Module):
    """Flatten written ``x.view(x.size(0), -1)``: a Shape->Gather->Unsqueeze->Concat->Reshape subgraph."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(conv_bn(3, 8), nn.MaxPool2d(2), conv_bn(8, 16, stride=2), nn.MaxPool2d(2))
        self.fc1 = nn.Linear(16 * 4 * 6, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        x = self.features(x)
        x = x.view(x.size(0), -1)
        return self.fc2(F.relu(self.fc1(x)))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = conv_bn(cin, cout, stride=stride)
        self.conv2 = conv_bn(cout, cout, act=None)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        skip = x if self.down is None else self.down(x)
        return F.relu(self.conv2(self.conv1(x)) + skip)


class ResNetLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.layer1 = BasicBlock(16, 16)
        self.layer2 = BasicBlock(16, 32, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class SqueezeExcite(nn.Module):
    def __init__(self, c, r=4):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(c, c // r, 1)
        self.fc2 = nn.Conv2d(c // r, c, 1)

    def forward(self, x):
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(self.pool(x)))))


class InvertedResidual(nn.Module):
    def __init__(self, c, expand, act):
        super().__init__()
        hidden = c * expand
        self.body = nn.Sequential(conv_bn(c, hidden, 1, act=act), conv_bn(hidden, hidden, 3, groups=hidden, act=act),
                                  SqueezeExcite(hidden), conv_bn(hidden, c, 1, act=None))

    def forward(self, x):
        return x + self.body(x)


class MobileNetLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 16, stride=2, act=nn.ReLU6)
        self.block1 = InvertedResidual(16, 4, nn.ReLU6)
        self.block2 = InvertedResidual(16, 3, nn.Hardswish)
        self.head = conv_bn(16, 48, 1, act=nn.Hardswish)
        self.classifier = nn.Sequential(nn.Linear(48, 32), nn.Hardswish(), nn.Linear(32, 10))

    def forward(self, x):
        x = self.head(self.block2(self.block1(self.stem(x))))
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


class UNetLike(nn.Module):
    """Encoder/decoder with every resampling op exporters write for segmentation and FPN heads."""

    def __init__(self):
        super().__init__()
        self.enc1 = conv_bn(3, 8)
        self.pool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)  # 32x48 -> 16x24 (15x23 with floor)
        self.enc2 = conv_bn(8, 16)
        self.pool2 = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.bottom = conv_bn(16, 16)
        self.up2 = nn.ConvTranspose2d(16, 16, 2, stride=2)
        self.up2_bn = nn.BatchNorm2d(16)
        self.up2b = nn.ConvTranspose2d(16, 8, 3, stride=2, padding=1, output_padding=1, bias=False)
        self.dec2 = conv_bn(16 + 16 + 8, 16)
        self.lateral = nn.Conv2d(16, 8, 1)
        self.dec1 = conv_bn(8 + 8 + 8, 8)
        self.out = nn.Conv2d(8, 3, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool1(e1))
        b = self.bottom(self.pool2(e2))
        d2 = self.dec2(torch.cat([F.relu(self.up2_bn(self.up2(b))), e2, self.up2b(b)], 1))
        lat = self.lateral(d2)
        near = F.interpolate(lat, scale_factor=2, mode="nearest")
        lin = F.interpolate(lat, scale_factor=2, mode="bilinear", align_corners=False)
        corners = F.interpolate(lat, size=e1.shape[-2:], mode="bilinear", align_corners=True)  # FPN-style size=
        d1 = self.dec1(torch.cat([near + e1, lin, corners], 1))
        return self.out(d1)


class Dynamic(nn.Module):
    """Exported with dynamic batch, height and width: every shape is resolved only at load time."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(conv_bn(3, 8), conv_bn(8, 16, stride=2))
        self.lateral = nn.Conv2d(16, 8, 1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        e = self.enc[0](x)
        y = self.enc[1](e)
        up = F.interpolate(self.lateral(y), size=e.shape[-2:], mode="nearest")
        seg = e + up
        logits = self.fc(y.mean((2, 3)))
        return seg, logits


class Extras(nn.Module):
    """Activations and reshapes that real models contain, with several outputs."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.leaky = nn.LeakyReLU(0.1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.prelu = nn.PReLU(8, init=0.2)
        self.c3 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.gelu = nn.GELU()
        self.attn = nn.Conv2d(8, 8, 1)
        self.flatten = nn.Flatten()
        self.fc_flat = nn.Linear(8 * 4 * 6, 4)
        self.fc_mean = nn.Linear(8, 4)
        self.token = nn.Linear(8, 8)

    def forward(self, x):
        x = self.leaky(self.c1(x))
        x = self.prelu(self.c2(x))
        x = self.gelu(self.c3(x))                           # 2x8x16x24
        x = x * torch.softmax(self.attn(x), dim=1)          # softmax over channels
        n, c, h, w = x.shape
        tokens = x.permute(0, 2, 3, 1).reshape(n, h * w, c)  # NCHW -> tokens
        x = self.token(tokens).reshape(n, h, w, c).permute(0, 3, 1, 2)
        flat = self.fc_flat(self.flatten(F.max_pool2d(x, 4)))
        pooled = self.fc_mean(x.mean((2, 3)))
        pooled2 = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return flat, pooled + pooled2.sum(1, keepdim=True), torch.flatten(x, 1)


# --------------------------------------------------------------------------------------------
# Fusion expectations (on the fused graph)
# --------------------------------------------------------------------------------------------

SHAPE_OPS = {"Shape", "Gather", "Unsqueeze", "Concat", "Slice", "Cast", "Squeeze", "ConstantOfShape", "Range", "Size"}


def layers(graph, op):
    return [l for l in graph if l.op == op]


def assert_no(graph, *op_types):
    left = {op: n for op, n in graph.op_counts().items() if op in op_types}
    assert not left, f"expected no {op_types} layers after import+fusion, found {left}: {graph.op_counts()}"


def activations(graph, op="Conv"):
    return [l.attrs.get("activation") for l in layers(graph, op)]


def check_flatten_view(graph):
    # The Shape subgraph and BN are gone; the flatten is a single Reshape with a constant shape.
    assert_no(graph, "BatchNormalization", "ChannelAffine", "Relu", *SHAPE_OPS)
    (reshape,) = layers(graph, "Reshape")
    assert all(isinstance(d, int) for d in reshape.attrs["shape"]), reshape.attrs
    assert reshape.out_specs[0].shape == (BATCH, 16 * 4 * 6)
    assert activations(graph) == ["Relu", "Relu"]
    fc_acts = [l.attrs.get("activation") for l in graph if l.op in ("Gemm", "MatMul", "Add")]
    assert "Relu" in fc_acts


def check_resnet(graph):
    assert_no(graph, "BatchNormalization", "ChannelAffine", "Relu", "Add")
    convs = layers(graph, "Conv")
    assert len(convs) == 6
    residual = [c for c in convs if c.attrs.get("residual")]
    assert len(residual) == 2 and all(c.attrs["activation"] == "Relu" for c in residual)
    # stem, the two first convs of the blocks and the residual ones carry Relu; the 1x1 downsample conv none.
    assert sorted(str(a) for a in activations(graph)) == ["None"] + ["Relu"] * 5


def check_mobilenet(graph):
    assert_no(graph, "BatchNormalization", "ChannelAffine", "Relu", "Clip", "HardSigmoid", "HardSwish")
    acts = activations(graph)
    assert acts.count("Clip") == 3  # ReLU6 of the stem, block1's expand and depthwise convs
    clips = [l.attrs["activation_params"] for l in layers(graph, "Conv") if l.attrs.get("activation") == "Clip"]
    assert all((p["min"], p["max"]) == (0.0, 6.0) for p in clips), clips
    assert acts.count("HardSigmoid") == 2  # the squeeze-excite gates
    assert acts.count("Relu") == 2  # the squeeze-excite bottlenecks
    # Hardswish is one HardSwish op from opset 14 on; before, x * HardSigmoid(x), which fusion merges.
    assert acts.count("HardSwish") == 3
    assert [l.attrs.get("activation") for l in graph if l.op in ("Gemm", "MatMul")][0] == "HardSwish"
    assert len(layers(graph, "Mul")) == 2  # only the squeeze-excite scalings are left
    depthwise = [c for c in layers(graph, "Conv") if c.attrs["group"] > 1]
    assert len(depthwise) == 2
    assert sum(bool(c.attrs.get("residual")) for c in layers(graph, "Conv")) == 2


def check_unet(graph):
    assert_no(graph, "BatchNormalization", "ChannelAffine", "Relu", *(SHAPE_OPS - {"Concat"}))
    assert len(layers(graph, "Concat")) == 2
    ups = layers(graph, "ConvTranspose")
    assert sorted(str(u.attrs.get("activation")) for u in ups) == ["None", "Relu"], "BN+Relu fold/fuse into it"
    resizes = sorted((l.attrs["mode"], l.attrs["coordinate_transformation_mode"]) for l in layers(graph, "Resize"))
    assert [m for m, _ in resizes] == ["linear", "linear", "nearest"]
    assert ("linear", "align_corners") in resizes
    (mp,) = layers(graph, "MaxPool")
    assert mp.out_specs[0].shape == (BATCH, 8, 16, 24)
    (ap,) = layers(graph, "AveragePool")
    assert ap.attrs["count_include_pad"] == 0


def check_dynamic(graph):
    assert_no(graph, "BatchNormalization", "ChannelAffine", "Relu", *SHAPE_OPS)
    assert activations(graph).count("Relu") == 2
    (resize,) = layers(graph, "Resize")
    assert resize.out_specs[0].shape[2:] == graph.inputs[next(iter(graph.inputs))].shape[2:]


def check_extras(graph):
    assert_no(graph, "LeakyRelu", "PRelu")
    acts = activations(graph)
    assert acts[:2] == ["LeakyRelu", "PRelu"], acts
    (softmax,) = layers(graph, "Softmax")
    assert softmax.attrs["axis"] % 4 == 1
    # The token Linear on (n, h*w, c) is MatMul + Add in the file: one MatMul with its bias here.
    (token,) = [l for l in graph if l.op in ("MatMul", "Gemm") and len(l.out_specs[0].shape) == 3]
    assert token.op == "MatMul" and token.consts[2].shape == (8,) and "bias" in token.attrs["fusion"]


class Case(NamedTuple):
    name: str
    build: type          # the nn.Module class
    check: Callable      # fusion expectations on the fused graph
    res: tuple = RES
    dynamic: dict = None  # dynamic_axes of the input: those dims are symbolic in the file


CASES = [
    Case("flatten_view", FlattenView, check_flatten_view, dynamic={0: "batch"}),
    Case("resnet", ResNetLike, check_resnet),
    Case("mobilenet", MobileNetLike, check_mobilenet),
    Case("unet", UNetLike, check_unet),
    Case("dynamic", Dynamic, check_dynamic, dynamic={0: "batch", 2: "height", 3: "width"}),
    Case("extras", Extras, check_extras),
]

# (exporter, opset): "torchscript" is dynamo=False as users call it (the exporter folds constants and
# Conv+BN itself); "torchscript-raw" turns both off so that our folding and BN passes do the work;
# "dynamo" is the torch.export-based exporter at its default opset, "dynamo-raw" with optimize=False.
EXPORTERS = [("torchscript", 13), ("torchscript", 17), ("torchscript-raw", 13), ("torchscript-raw", 17),
             ("dynamo", None), ("dynamo-raw", None)]


# --------------------------------------------------------------------------------------------
# Export, run, compare
# --------------------------------------------------------------------------------------------


def build(case):
    torch.manual_seed(0)
    model = case.build().eval()
    # Non-trivial BatchNorm statistics, so that folding them is actually tested.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    x = torch.randn(BATCH, 3, *case.res)
    return model, x


def export(model, x, path, exporter, opset, dynamic=None):
    """Export ``model`` to ``path``; skip (for this exporter only) when torch cannot export it."""
    kwargs = dict(input_names=["input"], opset_version=opset)
    if dynamic:
        kwargs["dynamic_axes"] = {"input": dynamic}
    if exporter.startswith("torchscript"):
        kwargs["dynamo"] = False
        if exporter == "torchscript-raw":
            kwargs.update(do_constant_folding=False, training=torch.onnx.TrainingMode.PRESERVE)
    else:
        kwargs.update(dynamo=True, optimize=exporter != "dynamo-raw", verbose=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), str(path), **kwargs)
    except (ImportError, torch.onnx.OnnxExporterError) as e:
        pytest.skip(f"torch {torch.__version__}: {exporter} export (opset {opset}) unavailable: "
                    f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    return path


def run_ort(path, feeds):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def assert_close(ours, ref, what, rtol=RTOL):
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} != {ref.shape}"
    err = float(np.max(np.abs(ours.astype(np.float64) - ref))) if ref.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    assert err <= rtol * scale, f"{what}: max|diff| {err:.3g} > {rtol:g} * max|ref| ({scale:.3g})"


def check_case(case, path, x, torch_out, **load_kwargs):
    graph = workbench.load(path, **load_kwargs)
    feeds = {"input": x.numpy()}
    ours = ReferenceExecutor(graph).run(feeds)
    ours = [ours[name] for name in graph.outputs]
    ref = run_ort(path, feeds)
    torch_out = [t.detach().numpy() for t in (torch_out if isinstance(torch_out, tuple) else (torch_out,))]
    assert len(ours) == len(ref) == len(torch_out)
    for i, (o, r, t) in enumerate(zip(ours, ref, torch_out)):
        assert_close(o, r, f"output {i} vs onnxruntime")
        assert_close(o, t, f"output {i} vs torch")
    case.check(graph)
    # The fused graph written back as ONNX (what a tuned file holds) runs in ONNX Runtime with
    # the same outputs, and imports again to the same layers.
    exported = path.with_name(path.stem + ".fused.onnx")
    onnx.save_model(export_graph(graph), str(exported))
    for i, (e, r) in enumerate(zip(run_ort(exported, feeds), ref)):
        assert_close(e, r, f"output {i} of the exported fused graph vs onnxruntime on the original")
    again = workbench.load(exported)
    assert [(l.name, l.op) for l in again] == [(l.name, l.op) for l in graph]
    return graph


@pytest.mark.parametrize("exporter,opset", EXPORTERS, ids=[f"{e}-{o or 'default'}" for e, o in EXPORTERS])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_export_matches(case, exporter, opset, tmp_path):
    model, x = build(case)
    with torch.no_grad():
        torch_out = model(x)
    path = export(model, x, tmp_path / f"{case.name}.onnx", exporter, opset, case.dynamic)
    kwargs = {"batch": BATCH, "resolution": case.res} if case.dynamic else {}
    graph = check_case(case, path, x, torch_out, **kwargs)
    if exporter.endswith("raw") and any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        # The exporter left the BatchNorms (and shape arithmetic) to us.
        assert graph.meta["source_op_counts"].get("BatchNormalization"), graph.meta["source_op_counts"]
    if case.name == "flatten_view" and exporter.startswith("torchscript"):
        assert {"Shape", "Gather", "Concat"} <= set(graph.meta["source_op_counts"]), graph.meta["source_op_counts"]


@pytest.mark.parametrize("exporter,opset", [("torchscript", 17), ("dynamo", None)])
def test_dynamic_axes_need_values(exporter, opset, tmp_path):
    case = next(c for c in CASES if c.name == "dynamic")
    model, x = build(case)
    path = export(model, x, tmp_path / "dynamic.onnx", exporter, opset, case.dynamic)
    with pytest.raises(ShapeError, match="'input'.*(batch|symbolic)"):
        workbench.load(path)
    with pytest.raises(ShapeError, match="'input'.*resolution"):
        workbench.load(path, batch=BATCH)
    # Another resolution than the one it was traced at, and odd: the stride-2 conv rounds up.
    res = (37, 53)
    x2 = torch.randn(BATCH, 3, *res)
    with torch.no_grad():
        torch_out = model(x2)
    graph = check_case(case, path, x2, torch_out, batch=BATCH, resolution=res)
    assert graph.inputs["input"].shape == (BATCH, 3, *res)
