"""Forward-pass speed: blobcast's engine against OpenCV's dnn on ResNet-50.

Generates a Caffe ResNet-50 (conv + BatchNorm + Scale + ReLU bottlenecks,
random weights), runs both engines on the same inputs at batch 1 and 8, and
prints medians and the ratio. Also checks that the two agree: the largest
difference of the fc1000 logits, relative to the largest logit.

    python benchmarks/engine_speed.py [--runs 5] [--device cpu|gpu]
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
from blobcast.engine import Net


class ResNetBuilder:
    def __init__(self):
        self.lines = ['name: "ResNet-50"',
                      'layer { name: "data" type: "Input" top: "data" '
                      'input_param { shape { dim: 1 dim: 3 dim: 224 dim: 224 } } }']
        self.shapes: dict[str, list[tuple]] = {}

    def conv(self, name, bottom, outputs, inputs, kernel, stride=1, pad=0, relu=True):
        self.lines.append(
            f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" '
            f'convolution_param {{ num_output: {outputs} kernel_size: {kernel} stride: {stride} '
            f'pad: {pad} bias_term: false }} }}')
        self.lines.append(f'layer {{ name: "bn_{name}" type: "BatchNorm" bottom: "{name}" '
                          f'top: "{name}" batch_norm_param {{ use_global_stats: true }} }}')
        self.lines.append(f'layer {{ name: "scale_{name}" type: "Scale" bottom: "{name}" '
                          f'top: "{name}" scale_param {{ bias_term: true }} }}')
        if relu:
            self.lines.append(f'layer {{ name: "{name}_relu" type: "ReLU" bottom: "{name}" '
                              f'top: "{name}" }}')
        self.shapes[name] = [(outputs, inputs, kernel, kernel)]
        self.shapes[f"bn_{name}"] = [(outputs,), (outputs,), (1,)]
        self.shapes[f"scale_{name}"] = [(outputs,), (outputs,)]
        return name

    def build(self) -> str:
        x = self.conv("conv1", "data", 64, 3, 7, stride=2, pad=3)
        self.lines.append('layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" '
                          'pooling_param { pool: MAX kernel_size: 3 stride: 2 } }')
        x, channels = "pool1", 64
        for stage, (width, blocks) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)], start=2):
            for block in range(blocks):
                prefix = f"res{stage}{chr(ord('a') + block)}"
                stride = 2 if block == 0 and stage > 2 else 1
                shortcut = x
                if block == 0:
                    shortcut = self.conv(f"{prefix}_branch1", x, width * 4, channels, 1, stride,
                                         relu=False)
                y = self.conv(f"{prefix}_branch2a", x, width, channels, 1, stride)
                y = self.conv(f"{prefix}_branch2b", y, width, width, 3, 1, 1)
                y = self.conv(f"{prefix}_branch2c", y, width * 4, width, 1, relu=False)
                self.lines.append(f'layer {{ name: "{prefix}" type: "Eltwise" bottom: "{shortcut}" '
                                  f'bottom: "{y}" top: "{prefix}" }}')
                self.lines.append(f'layer {{ name: "{prefix}_relu" type: "ReLU" bottom: "{prefix}" '
                                  f'top: "{prefix}" }}')
                x, channels = prefix, width * 4
        self.lines.append(f'layer {{ name: "pool5" type: "Pooling" bottom: "{x}" top: "pool5" '
                          'pooling_param { pool: AVE global_pooling: true } }')
        self.lines.append('layer { name: "fc1000" type: "InnerProduct" bottom: "pool5" '
                          'top: "fc1000" inner_product_param { num_output: 1000 } }')
        self.lines.append('layer { name: "prob" type: "Softmax" bottom: "fc1000" top: "prob" }')
        self.shapes["fc1000"] = [(1000, 2048), (1000,)]
        return "\n".join(self.lines) + "\n"


def resnet50(folder: str) -> tuple[str, str]:
    builder = ResNetBuilder()
    text = builder.build()
    model = net_from_text(text, "<resnet50>")
    rng = np.random.default_rng(0)
    for layer in model.layers:
        for i, shape in enumerate(builder.shapes.get(layer.name, [])):
            if layer.type == "BatchNorm":
                values = [rng.normal(0, 0.1, shape), rng.uniform(0.5, 1.5, shape), np.ones(shape)][i]
            elif layer.type == "Convolution":
                fan_in = int(np.prod(shape[1:]))
                values = rng.normal(0, np.sqrt(2.0 / fan_in), shape)
            else:
                values = rng.normal(0, 0.05, shape) + (1.0 if layer.type == "Scale" and i == 0 else 0)
            layer.blobs.append(blobcast.Blob(np.asarray(values, np.float32)))
    prototxt, weights = os.path.join(folder, "resnet50.prototxt"), os.path.join(folder, "resnet50.caffemodel")
    with open(prototxt, "w") as handle:
        handle.write(text)
    blobcast.save(model, weights)
    return prototxt, weights


def median_seconds(action, runs: int) -> float:
    action()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    import cv2

    folder = tempfile.mkdtemp(prefix="blobcast-engine-")
    prototxt, weights = resnet50(folder)
    model = blobcast.load(weights, prototxt=prototxt)
    net = Net(model, device=options.device)
    xp = net.xp
    reference = cv2.dnn.readNetFromCaffe(prototxt, weights)
    rows = []
    for batch in (1, 8):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 224, 224)).astype(np.float32)
        device_x = xp.asarray(x)

        def ours(device_x=device_x):
            out = net.forward({"data": device_x})
            if xp is not np:
                xp.cuda.Stream.null.synchronize()
            return out

        def opencv(x=x):
            reference.setInput(x)
            return reference.forward(["fc1000", "prob"])

        ours_seconds = median_seconds(ours, options.runs)
        opencv_seconds = median_seconds(opencv, options.runs)
        # Compare the logits: with random weights the softmax saturates.
        logits = Net(model, device=options.device).forward({"data": device_x}, keep_all=True)["fc1000"]
        logits = np.asarray(logits.get() if hasattr(logits, "get") else logits)
        theirs = opencv()[0]
        difference = float(np.abs(logits - theirs).max() / np.abs(theirs).max())
        rows.append({"batch": batch, "blobcast_s": ours_seconds, "opencv_s": opencv_seconds,
                     "ratio": ours_seconds / opencv_seconds, "logits_max_rel_difference": difference})
    if options.json:
        print(json.dumps({"device": options.device, "rows": rows}, indent=2))
        return
    print(f"ResNet-50, random weights; medians of {options.runs} runs; blobcast on {options.device}, "
          f"OpenCV {cv2.__version__} on the CPU ({cv2.getNumThreads()} threads)")
    print(f"{'batch':>5} {'blobcast s':>11} {'OpenCV s':>9} {'ratio':>6} {'logits diff':>12}")
    for row in rows:
        print(f"{row['batch']:5d} {row['blobcast_s']:11.3f} {row['opencv_s']:9.3f} "
              f"{row['ratio']:6.2f} {row['logits_max_rel_difference']:12.2e}")


if __name__ == "__main__":
    main()
