"""The five nets the engine benchmarks run, written as Caffe prototxt with
seeded random weights of Caffe's shapes: ResNet-50, a half-width ResNet-50
(the "1by2" shape), MobileNet-v1 (depthwise convolutions as group ==
channels), a GoogLeNet-style net (LRN, nine inception blocks) and VGG16.

Weights are drawn so that activations stay in range through every layer
(He-normal convolutions, BatchNorm statistics near the identity): the
outputs compared against OpenCV are meaningful numbers, not overflow.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np

import blobcast
from blobcast.converters.prototxt import net_from_text
from blobcast.layers.base import implementation
from blobcast.shapes import blob_shapes


class NetWriter:
    """Appends Caffe layers as prototxt text; returns the top of each."""

    def __init__(self, name: str, size: int = 224):
        self.lines = [f'name: "{name}"',
                      'layer { name: "data" type: "Input" top: "data" '
                      f'input_param {{ shape {{ dim: 1 dim: 3 dim: {size} dim: {size} }} }} }}']

    def add(self, text: str) -> None:
        self.lines.append(f"layer {{ {text} }}")

    def conv(self, name, bottom, outputs, kernel, stride=1, pad=0, group=1, relu=True, bn=False):
        bias = "false" if bn else "true"
        grouping = f" group: {group}" if group > 1 else ""
        self.add(f'name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" '
                 f'convolution_param {{ num_output: {outputs} kernel_size: {kernel} '
                 f'stride: {stride} pad: {pad}{grouping} bias_term: {bias} }}')
        if bn:  # Caffe's BatchNorm + Scale pair, in place, as deployed nets write it
            self.add(f'name: "{name}/bn" type: "BatchNorm" bottom: "{name}" top: "{name}" '
                     'batch_norm_param { use_global_stats: true }')
            self.add(f'name: "{name}/scale" type: "Scale" bottom: "{name}" top: "{name}" '
                     'scale_param { bias_term: true }')
        if relu:
            self.add(f'name: "{name}/relu" type: "ReLU" bottom: "{name}" top: "{name}"')
        return name

    def pool(self, name, bottom, kind="MAX", kernel=3, stride=2, pad=0, global_pooling=False):
        window = "global_pooling: true" if global_pooling else \
            f"kernel_size: {kernel} stride: {stride} pad: {pad}"
        self.add(f'name: "{name}" type: "Pooling" bottom: "{bottom}" top: "{name}" '
                 f'pooling_param {{ pool: {kind} {window} }}')
        return name

    def fc(self, name, bottom, outputs, relu=False):
        self.add(f'name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "{name}" '
                 f'inner_product_param {{ num_output: {outputs} }}')
        if relu:
            self.add(f'name: "{name}/relu" type: "ReLU" bottom: "{name}" top: "{name}"')
        return name

    def text(self, final: str) -> str:
        self.add(f'name: "prob" type: "Softmax" bottom: "{final}" top: "prob"')
        return "\n".join(self.lines) + "\n"


def resnet50_text(width: float = 1.0) -> str:
    name = "ResNet-50" if width == 1 else "ResNet-50-1by2"
    net = NetWriter(name)
    x = net.conv("conv1", "data", int(64 * width), 7, 2, 3, bn=True)
    x = net.pool("pool1", x)
    for stage, (planes, blocks) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)], start=2):
        planes = int(planes * width)
        for block in range(blocks):
            prefix = f"res{stage}{chr(ord('a') + block)}"
            stride = 2 if block == 0 and stage > 2 else 1
            shortcut = x
            if block == 0:
                shortcut = net.conv(f"{prefix}_branch1", x, planes * 4, 1, stride, relu=False, bn=True)
            y = net.conv(f"{prefix}_branch2a", x, planes, 1, stride, bn=True)
            y = net.conv(f"{prefix}_branch2b", y, planes, 3, 1, 1, bn=True)
            y = net.conv(f"{prefix}_branch2c", y, planes * 4, 1, relu=False, bn=True)
            net.add(f'name: "{prefix}" type: "Eltwise" bottom: "{shortcut}" bottom: "{y}" '
                    f'top: "{prefix}"')
            net.add(f'name: "{prefix}/relu" type: "ReLU" bottom: "{prefix}" top: "{prefix}"')
            x = prefix
    x = net.pool("pool5", x, "AVE", global_pooling=True)
    return net.text(net.fc("fc1000", x, 1000))


def mobilenet_text() -> str:
    net = NetWriter("MobileNet-v1")
    x = net.conv("conv1", "data", 32, 3, 2, 1, bn=True)
    channels = 32
    plan = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + \
        [(1024, 2), (1024, 1)]
    for i, (outputs, stride) in enumerate(plan, start=2):
        x = net.conv(f"conv{i}_dw", x, channels, 3, stride, 1, group=channels, bn=True)
        x = net.conv(f"conv{i}_sep", x, outputs, 1, bn=True)
        channels = outputs
    x = net.pool("pool6", x, "AVE", global_pooling=True)
    return net.text(net.fc("fc7", x, 1000))


def googlenet_text() -> str:
    net = NetWriter("GoogLeNet-style")
    x = net.conv("conv1/7x7_s2", "data", 64, 7, 2, 3)
    x = net.pool("pool1/3x3_s2", x)
    net.add(f'name: "pool1/norm1" type: "LRN" bottom: "{x}" top: "pool1/norm1" '
            'lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 }')
    x = net.conv("conv2/3x3_reduce", "pool1/norm1", 64, 1)
    x = net.conv("conv2/3x3", x, 192, 3, 1, 1)
    net.add(f'name: "conv2/norm2" type: "LRN" bottom: "{x}" top: "conv2/norm2" '
            'lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 }')
    x = net.pool("pool2/3x3_s2", "conv2/norm2")
    blocks = [("3a", 64, 96, 128, 16, 32, 32), ("3b", 128, 128, 192, 32, 96, 64), "pool",
              ("4a", 192, 96, 208, 16, 48, 64), ("4b", 160, 112, 224, 24, 64, 64),
              ("4c", 128, 128, 256, 24, 64, 64), ("4d", 112, 144, 288, 32, 64, 64),
              ("4e", 256, 160, 320, 32, 128, 128), "pool",
              ("5a", 256, 160, 320, 32, 128, 128), ("5b", 384, 192, 384, 48, 128, 128)]
    stage = 3
    for block in blocks:
        if block == "pool":
            x = net.pool(f"pool{stage}/3x3_s2", x)
            stage += 1
            continue
        tag, n1, n3r, n3, n5r, n5, proj = block
        p = f"inception_{tag}"
        a = net.conv(f"{p}/1x1", x, n1, 1)
        b = net.conv(f"{p}/3x3", net.conv(f"{p}/3x3_reduce", x, n3r, 1), n3, 3, 1, 1)
        c = net.conv(f"{p}/5x5", net.conv(f"{p}/5x5_reduce", x, n5r, 1), n5, 5, 1, 2)
        d = net.conv(f"{p}/pool_proj", net.pool(f"{p}/pool", x, kernel=3, stride=1, pad=1), proj, 1)
        net.add(f'name: "{p}/output" type: "Concat" bottom: "{a}" bottom: "{b}" bottom: "{c}" '
                f'bottom: "{d}" top: "{p}/output"')
        x = f"{p}/output"
    x = net.pool("pool5/7x7_s1", x, "AVE", global_pooling=True)
    return net.text(net.fc("loss3/classifier", x, 1000))


def vgg16_text() -> str:
    net = NetWriter("VGG16")
    x = "data"
    for stage, (outputs, convs) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)], start=1):
        for i in range(1, convs + 1):
            x = net.conv(f"conv{stage}_{i}", x, outputs, 3, 1, 1)
        x = net.pool(f"pool{stage}", x, kernel=2, stride=2)
    x = net.fc("fc6", x, 4096, relu=True)
    x = net.fc("fc7", x, 4096, relu=True)
    return net.text(net.fc("fc8", x, 1000))


NETS = {
    "ResNet-50": lambda: resnet50_text(1.0),
    "ResNet-50-1by2": lambda: resnet50_text(0.5),
    "MobileNet-v1": mobilenet_text,
    "GoogLeNet-style": googlenet_text,
    "VGG16": vgg16_text,
}


def with_weights(text: str, seed: int = 0) -> blobcast.Model:
    """The net with seeded random weights in the shapes its layer types give."""
    model = net_from_text(text, "<benchmark net>")
    _, shapes = blob_shapes(model)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.type == "Input":
            continue
        op = implementation(layer.type, layer.name)(layer, np, [], "TEST")
        for i, shape in enumerate(op.blob_shapes([shapes[b] for b in layer.bottoms])):
            if layer.type == "BatchNorm":
                values = [rng.normal(0, 0.1, shape), rng.uniform(0.5, 1.5, shape), np.ones(shape)][i]
            elif layer.type == "Scale":
                values = rng.normal(1.0 if i == 0 else 0.0, 0.05, shape)
            elif i == 0:  # He-normal: activations keep their scale through depth
                values = rng.normal(0, np.sqrt(2.0 / max(np.prod(shape[1:]), 1)), shape)
            else:
                values = rng.normal(0, 0.01, shape)
            layer.blobs.append(blobcast.Blob(np.asarray(values, np.float32)))
    return model


def write_net(name: str, folder: str, seed: int = 0) -> tuple[str, str]:
    """Write the net as `<folder>/<name>.prototxt` + `.caffemodel`; return both paths."""
    text = NETS[name]()
    prototxt = os.path.join(folder, f"{name}.prototxt")
    weights = os.path.join(folder, f"{name}.caffemodel")
    with open(prototxt, "w") as handle:
        handle.write(text)
    blobcast.save(with_weights(text, seed), weights)
    return prototxt, weights


def benchmark_parser(doc: str, nets: str = ",".join(NETS), runs: int = 5) -> argparse.ArgumentParser:
    """The options every benchmark takes: --nets, --runs and --json."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--runs", type=int, default=runs)
    parser.add_argument("--nets", default=nets)
    parser.add_argument("--json", action="store_true")
    return parser


def median_seconds(action, runs: int) -> float:
    """The median time of `runs` calls of action()."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def chosen_nets(parser, spec: str) -> list[str]:
    """The nets named in a comma-separated --nets value (an error names unknown ones)."""
    names = [name for name in spec.split(",") if name]
    unknown = [name for name in names if name not in NETS]
    if unknown:
        parser.error(f"unknown nets {unknown}; choose from {list(NETS)}")
    return names


def measure_and_report(names, measure_one, header: str, line, as_json: bool, facts: dict,
                       prefix: str) -> None:
    """Run measure_one(name, folder) -> rows for each net in a scratch folder,
    then print the rows as JSON (with `facts`) or as a table under `header`."""
    rows = []
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        for name in names:
            rows += measure_one(name, folder)
    if as_json:
        print(json.dumps({**facts, "rows": rows}, indent=2))
        return
    print(header)
    for row in rows:
        print(line(row))
