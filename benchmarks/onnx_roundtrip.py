"""ResNet-50 through ONNX and back: times and agreement.

Generates the Caffe ResNet-50 of engine_speed.py, converts it to ONNX (with
blobcast's checks: onnx's full checker and a forward comparison), runs it in
onnxruntime against blobcast's engine, imports it back to Caffe and compares
again. Prints seconds per step and the largest differences.

    python benchmarks/onnx_roundtrip.py
"""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np
import onnxruntime
from nets import write_net

import blobcast
from blobcast.check import compare_arrays
from blobcast.converters.onnx_runner import OnnxRunner
from blobcast.engine import Net


def main() -> None:
    folder = tempfile.mkdtemp(prefix="blobcast-onnx-")
    prototxt, weights = write_net("ResNet-50", folder)
    onnx_path = os.path.join(folder, "resnet50.onnx")
    back = os.path.join(folder, "resnet50_back.caffemodel")
    start = time.perf_counter()
    export = blobcast.convert(weights, onnx_path, prototxt=prototxt)
    export_seconds = time.perf_counter() - start
    start = time.perf_counter()
    imported = blobcast.convert(onnx_path, back)
    import_seconds = time.perf_counter() - start
    x = np.random.default_rng(3).standard_normal((1, 3, 224, 224)).astype(np.float32)
    caffe = Net(blobcast.load(weights, prototxt=prototxt)).forward({"data": x}, keep_all=True)
    session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    ort_prob = session.run(["prob"], {"data": x})[0]
    ort_logits = OnnxRunner(onnx_path).forward({"data": x}, keep_all=True)["fc1000"]
    again = Net(blobcast.load(back)).forward({"data": x}, keep_all=True)
    print(f"ResNet-50 (random weights, {os.path.getsize(weights) / 1e6:.0f} MB)")
    print(f"caffemodel -> onnx: {export_seconds:.2f} s, check: {export.check}, forward "
          f"max abs error {export.forward['max_abs_error']:.3g}")
    print(f"onnx -> caffemodel: {import_seconds:.2f} s, check: {imported.check}, forward "
          f"max abs error {imported.forward['max_abs_error']:.3g}")
    for name, a, b in (("prob: engine vs onnxruntime", caffe["prob"], ort_prob),
                       ("fc1000: engine vs onnxruntime", caffe["fc1000"], ort_logits),
                       ("fc1000: engine, original vs imported", caffe["fc1000"], again["fc1000"]),
                       ("prob: engine, original vs imported", caffe["prob"], again["prob"])):
        result = compare_arrays(name, a, b)
        print(f"{name}: max abs {result.max_abs_error:.3g}, cosine {result.cosine_similarity:.9f}, "
              f"{'pass' if result.passed else 'FAIL'}")


if __name__ == "__main__":
    main()
