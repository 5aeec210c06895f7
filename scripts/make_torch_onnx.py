"""Make fixtures/torch/: small torchvision-family classifiers exported to ONNX
by both of torch.onnx's exporters (the default dynamo one and dynamo=False),
at opset 13 and at each exporter's newest.

Each model is a reduced-width or reduced-depth variant built from the same
torchvision blocks as the full model (BasicBlock, InvertedResidual, Fire,
Inception, _DenseBlock, ...), so the exported graphs have the same node
patterns at a fraction of the size. Weights come from torch's own
initialisation under a recorded seed; BatchNorm's affine parameters are then
drawn at random and its running statistics calibrated on random inputs, so
no BatchNorm is an identity. Every file is checked against the torch model
with onnxruntime before it is kept.

Needs torch, torchvision, onnx, onnxscript and onnxruntime (a development
environment only; the tests read the files, never torch):

    python scripts/make_torch_onnx.py fixtures/torch
"""

from __future__ import annotations

import hashlib
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
import torchvision
from torch import nn
from torchvision.models import densenet, mnasnet, regnet, resnet, squeezenet
from torchvision.models.efficientnet import EfficientNet, MBConvConfig
from torchvision.models.googlenet import BasicConv2d, Inception
from torchvision.models.mobilenetv2 import MobileNetV2
from torchvision.models.mobilenetv3 import InvertedResidualConfig, MobileNetV3
from torchvision.models.shufflenetv2 import ShuffleNetV2

INPUT_SHAPE = (1, 3, 64, 64)
CLASSES = 10
SEED = 20260301  # + the family's index
CALIBRATION_SEED = 7
INPUT_SEED = 11


class TinyResNet(nn.Module):
    """ResNet-18's stem (7x7/2 conv, BN, ReLU, 3x3/2 max pool with padding 1)
    and two BasicBlocks, the second downsampling, then average pool and fc."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        down = nn.Sequential(resnet.conv1x1(8, 16, 2), nn.BatchNorm2d(16))
        self.layer1 = resnet.BasicBlock(8, 8)
        self.layer2 = resnet.BasicBlock(8, 16, 2, down)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, CLASSES)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class TinySqueezeNet(nn.Module):
    """SqueezeNet 1.1's layout: 3x3/2 conv, ceil-mode max pools, Fire
    modules, a 1x1 conv classifier and global average pooling."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, ceil_mode=True),
            squeezenet.Fire(16, 4, 8, 8), squeezenet.Fire(16, 4, 8, 8),
            nn.MaxPool2d(3, 2, ceil_mode=True), squeezenet.Fire(16, 8, 16, 16))
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(32, CLASSES, 1),
                                        nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1))

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


class TinyGoogLeNet(nn.Module):
    """GoogLeNet's stem and two Inception modules (with their ceil-mode
    pools), average pool, dropout and fc."""

    def __init__(self):
        super().__init__()
        self.conv1 = BasicConv2d(3, 8, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception3a = Inception(8, 4, 4, 8, 2, 4, 4)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.inception4a = Inception(20, 8, 4, 8, 2, 4, 4)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(24, CLASSES)

    def forward(self, x):
        x = self.maxpool1(self.conv1(x))
        x = self.inception4a(self.maxpool3(self.inception3a(x)))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


def tiny_mnasnet():
    """MNASNet's stem, a stack of its inverted residuals and its head (the
    1x1 conv to 1280 channels replaced by 32, the mean over H and W kept)."""
    model = mnasnet.MNASNet(0.25, num_classes=CLASSES)
    layers = list(model.layers)
    stem_out = mnasnet._get_depths(0.25)[1]
    stack = mnasnet._stack(stem_out, 24, 3, 2, 3, 1, 0.9997)  # torchvision's own block maker

    model.layers = nn.Sequential(*layers[:8], stack, nn.Conv2d(24, 32, 1, bias=False),
                                 nn.BatchNorm2d(32), nn.ReLU(inplace=True))
    model.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(32, CLASSES))
    return model


def tiny_mobilenet_v3():
    make = InvertedResidualConfig
    settings = [make(8, 3, 8, 8, True, "RE", 2, 1, 1.0), make(8, 3, 24, 16, False, "RE", 2, 1, 1.0),
                make(16, 5, 32, 16, True, "HS", 1, 1, 1.0), make(16, 3, 48, 24, True, "HS", 2, 1, 1.0)]
    return MobileNetV3(settings, last_channel=64, num_classes=CLASSES)


FAMILIES = {
    "resnet": TinyResNet,
    "mobilenet_v2": lambda: MobileNetV2(CLASSES, width_mult=0.25, inverted_residual_setting=[
        [1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 1, 2]]),
    "mobilenet_v3": tiny_mobilenet_v3,
    "shufflenet_v2": lambda: ShuffleNetV2([1, 2, 1], [8, 16, 32, 64, 64], num_classes=CLASSES),
    "squeezenet": TinySqueezeNet,
    "mnasnet": tiny_mnasnet,
    "efficientnet": lambda: EfficientNet([MBConvConfig(1, 3, 1, 16, 8, 1, 0.5, 1.0),
                                          MBConvConfig(6, 3, 2, 8, 12, 2, 0.5, 1.0),
                                          MBConvConfig(6, 5, 2, 12, 20, 1, 0.5, 1.0)],
                                         dropout=0.2, last_channel=64, num_classes=CLASSES),
    "regnet": lambda: regnet.RegNet(regnet.BlockParams(
        depths=[1, 2], widths=[8, 16], group_widths=[8, 8], bottleneck_multipliers=[1.0, 1.0],
        strides=[2, 2], se_ratio=0.25), stem_width=8, num_classes=CLASSES),
    "googlenet": TinyGoogLeNet,
    "densenet": lambda: densenet.DenseNet(growth_rate=4, block_config=(2, 2), num_init_features=8,
                                          bn_size=2, num_classes=CLASSES),
}
# The dynamo exporter writes opset 18 at least: asked for 13, its version
# converter fails (a Reduce* node's axes are not a constant) and it keeps 18.
EXPORTS = [("legacy", False, 13), ("legacy", False, 20), ("dynamo", True, 18), ("dynamo", True, 23)]


def built(index: int, make) -> nn.Module:
    """The family's model with seeded weights and calibrated BatchNorm."""
    torch.manual_seed(SEED + index)
    model = make()
    generator = torch.Generator().manual_seed(SEED + index)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            with torch.no_grad():
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.5, 0.5, generator=generator)
            module.momentum = None  # a plain average over the calibration batches
            module.reset_running_stats()
    model.train()
    calibration = torch.Generator().manual_seed(CALIBRATION_SEED)
    with torch.no_grad():
        for _ in range(8):
            model(torch.randn(8, *INPUT_SHAPE[1:], generator=calibration))
    return model.eval()


def export(model, path: Path, dynamo: bool, opset: int) -> None:
    example = torch.randn(*INPUT_SHAPE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        options = {"external_data": False} if dynamo else {}
        torch.onnx.export(model, (example,), str(path), dynamo=dynamo, opset_version=opset,
                          input_names=["input"], output_names=["logits"], **options)


def checked(model, path: Path) -> float:
    """The largest difference between onnxruntime's output and torch's."""
    x = np.random.default_rng(INPUT_SEED).standard_normal(INPUT_SHAPE).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    return float(np.abs(got - expected).max())


def main(folder: str) -> None:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, (family, make) in enumerate(FAMILIES.items()):
        model = built(index, make)
        for exporter, dynamo, opset in EXPORTS:
            path = out / f"{family}_{exporter}_op{opset}.onnx"
            try:
                export(model, path, dynamo, opset)
            except Exception as error:  # noqa: BLE001 (recorded in the manifest)
                rows.append(f"| {family} | {exporter} | {opset} | not made: "
                            f"{str(error).splitlines()[0][:120]} | | | |")
                path.unlink(missing_ok=True)
                continue
            stamped = next(o.version for o in onnx.load(path).opset_import if o.domain in ("", "ai.onnx"))
            error = checked(model, path)
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
            rows.append(f"| {family} | {exporter} | {opset} | `{path.name}` | {stamped} | "
                        f"{path.stat().st_size} | {error:.2g} | {SEED + index} | {digest} |")
            print(rows[-1], flush=True)
    header = [
        "# fixtures/torch: torchvision-family classifiers exported by torch.onnx",
        "",
        f"Made by `scripts/make_torch_onnx.py` with torch {torch.__version__}, torchvision "
        f"{torchvision.__version__}, onnx {onnx.__version__}, onnxruntime "
        f"{onnxruntime.__version__}. Input `input` {list(INPUT_SHAPE)}, output `logits` "
        f"[1, {CLASSES}]. Weights: torch's initialisation after torch.manual_seed(seed); "
        "BatchNorm weight ~ U(0.5, 1.5) and bias ~ U(-0.5, 0.5) from a generator with the same "
        f"seed, running statistics averaged over 8 batches of 8 standard-normal inputs "
        f"(seed {CALIBRATION_SEED}). `torch vs ort` is the largest difference between torch's "
        f"output and onnxruntime's on a standard-normal input (NumPy seed {INPUT_SEED}).",
        "",
        "The architectures are reduced variants of torchvision's (pytorch/vision, "
        "`torchvision/models/`, BSD 3-Clause licence), built from its blocks; the weights are "
        "random, made by the script. Files from the same versions are byte-identical on "
        "every run.",
        "",
        "| family | exporter | asked opset | file | stamped opset | bytes | torch vs ort | seed "
        "| sha256[:16] |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    (out / "MANIFEST.md").write_text("\n".join(header + rows) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "fixtures/torch")
