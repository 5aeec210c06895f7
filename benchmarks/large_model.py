"""Models beyond protobuf's 2 GB: time and peak memory per step.

Builds a model of several 25088x16384 fully connected layers (1.6 GB each;
about 4.9 GB with the default 3) in sparse files, then in fresh processes:
writes it as .caffemodel.h5, converts .h5 -> .onnx (external data) ->
.caffemodel.h5, and reads a .caffemodel over 2 GB (written here with the
2 GB refusal lifted, as another tool might write one) into .caffemodel.h5.
Steps are load + save, without convert's read-back checks, to measure the
format work. Needs about 25 GB of disk in the chosen folder.

    python benchmarks/large_model.py [--layers 3] [--folder DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

STEP = r"""
import sys, time
import numpy as np
import blobcast
from blobcast.converters import caffemodel
kind, folder, layers = sys.argv[1], sys.argv[2], int(sys.argv[3])
start = time.perf_counter()
if kind == "build":
    model = blobcast.Model()
    model.layers.append(blobcast.Layer("data", "Input", tops=["data"],
                                       input_param={"shape": [{"dim": [1, 25088]}]}))
    previous = "data"
    for i in range(layers):
        path = f"{folder}/fc{i}.bin"
        with open(path, "wb") as handle:
            handle.truncate(16384 * 25088 * 4)
        weights = np.memmap(path, dtype="<f4", mode="r+", shape=(16384, 25088))
        weights[:, :: 997] = np.float32(i + 1)  # some data in every page row
        layer = blobcast.Layer(f"fc{i}", "InnerProduct", bottoms=[previous], tops=[f"fc{i}"],
                               blobs=[np.memmap(path, dtype="<f4", mode="r", shape=(16384, 25088))])
        layer.type_params.num_output, layer.type_params.bias_term = 16384, False
        model.layers.append(layer)
        model.layers.append(blobcast.Layer(f"tile{i}", "Concat", bottoms=[f"fc{i}", f"fc{i}"],
                                           tops=[f"wide{i}"]))
        model.layers.append(blobcast.Layer(f"crop{i}", "Slice", bottoms=[f"wide{i}"],
                                           tops=[f"next{i}", f"rest{i}"],
                                           slice_param={"axis": 1, "slice_point": [25088]}))
        model.layers.append(blobcast.Layer(f"quiet{i}", "Silence", bottoms=[f"rest{i}"]))
        previous = f"next{i}"
    blobcast.save(model, f"{folder}/big.caffemodel.h5")
elif kind == "h5-onnx":
    blobcast.save(blobcast.load(f"{folder}/big.caffemodel.h5"), f"{folder}/big.onnx")
elif kind == "onnx-h5":
    blobcast.save(blobcast.load(f"{folder}/big.onnx"), f"{folder}/back.caffemodel.h5")
elif kind == "write-big-caffemodel":
    caffemodel.PROTOBUF_LIMIT = 2**40  # stand in for a tool that writes past Caffe's limit
    blobcast.save(blobcast.load(f"{folder}/big.caffemodel.h5"), f"{folder}/big.caffemodel")
elif kind == "big-caffemodel-h5":
    blobcast.save(blobcast.load(f"{folder}/big.caffemodel"), f"{folder}/from_big.caffemodel.h5")
seconds = time.perf_counter() - start
peak = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
print(seconds, int(peak) * 1024)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--folder", help="where to put the files (default: a temp folder)")
    options = parser.parse_args()
    folder = options.folder or tempfile.mkdtemp(prefix="blobcast-large-")
    os.makedirs(folder, exist_ok=True)
    size = options.layers * 16384 * 25088 * 4
    print(f"model: {options.layers} x 25088x16384 float32 = {size / 2**30:.2f} GiB")
    print(f"{'step':36} {'seconds':>8} {'peak GiB':>9} {'peak / model':>13}")
    for label, kind in (("build, write .caffemodel.h5", "build"),
                        (".caffemodel.h5 -> .onnx (external)", "h5-onnx"),
                        (".onnx -> .caffemodel.h5", "onnx-h5"),
                        ("write a .caffemodel over 2 GB", "write-big-caffemodel"),
                        (".caffemodel over 2 GB -> .h5", "big-caffemodel-h5")):
        result = subprocess.run([sys.executable, "-c", STEP, kind, folder, str(options.layers)],
                                capture_output=True, text=True)
        if result.returncode:
            print(f"{label}: failed\n{result.stderr[-2000:]}")
            break
        seconds, peak = result.stdout.split()
        print(f"{label:36} {float(seconds):8.1f} {int(peak) / 2**30:9.2f} {int(peak) / size:13.2f}")
    if not options.folder:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
