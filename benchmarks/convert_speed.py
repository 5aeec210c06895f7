"""Conversion speed and memory on a VGG16-size model (138M float32 parameters).

Generates the model, then times each direction against copying the same
bytes (`cp` through the page cache) and against the plain protobuf path,
each run in a fresh process so peak memory is its own. Prints medians.

    python benchmarks/convert_speed.py [--runs 3] [--scale 1.0] [--keep DIR] [--cli]

With --cli: `blobcast convert` as a user runs it, a fresh process per run,
every direction with --no-verify and with the default checks, beside `cp`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import blobcast

VGG16 = [  # (name, weight shape) - biases follow each layer's first dim
    ("conv1_1", (64, 3, 3, 3)), ("conv1_2", (64, 64, 3, 3)), ("conv2_1", (128, 64, 3, 3)),
    ("conv2_2", (128, 128, 3, 3)), ("conv3_1", (256, 128, 3, 3)), ("conv3_2", (256, 256, 3, 3)),
    ("conv3_3", (256, 256, 3, 3)), ("conv4_1", (512, 256, 3, 3)), ("conv4_2", (512, 512, 3, 3)),
    ("conv4_3", (512, 512, 3, 3)), ("conv5_1", (512, 512, 3, 3)), ("conv5_2", (512, 512, 3, 3)),
    ("conv5_3", (512, 512, 3, 3)), ("fc6", (4096, 25088)), ("fc7", (4096, 4096)),
    ("fc8", (1000, 4096)),
]

# One measured operation, run in a child process; prints seconds and peak RSS.
CHILD = r"""
import sys, time
kind, src, dst = sys.argv[1:4]
start = time.perf_counter()
if kind == "blobcast":
    import blobcast
    obj = blobcast.load(src)
    blobcast.save(obj, dst)
elif kind == "blobcast-verify":
    import blobcast
    blobcast.convert(src, dst, overwrite=True)
elif kind == "protobuf":
    import h5py, numpy as np
    from blobcast.converters import caffe_pb2
    net = caffe_pb2.NetParameter.FromString(open(src, "rb").read())
    with h5py.File(dst, "w") as f:
        data = f.create_group("data")
        for layer in net.layer:
            group = data.create_group(layer.name)
            for i, blob in enumerate(layer.blobs):
                group.create_dataset(str(i), data=np.array(blob.data, np.float32).reshape(blob.shape.dim))
elif kind == "protobuf-write":
    import h5py, numpy as np
    from blobcast.converters import caffe_pb2
    net = caffe_pb2.NetParameter()
    with h5py.File(src) as f:
        for name in f["data"]:
            layer = net.layer.add(name=name)
            for i in sorted(f["data"][name], key=int):
                array = f["data"][name][i][()]
                blob = layer.blobs.add()
                blob.shape.dim.extend(array.shape)
                blob.data.extend(array.ravel())
    open(dst, "wb").write(net.SerializeToString())
elif kind == "inspect":
    import blobcast
    from blobcast.app.inspect import inspect_file
    inspect_file(src)
seconds = time.perf_counter() - start
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork and exec, so a
# child would report its parent's peak.
peak_kb = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
print(seconds, int(peak_kb) * 1024)
"""


def make_model(scale: float) -> blobcast.Model:
    """VGG16's weights as a runnable chain: a 3x7x7 input and same-size 3x3
    convolutions, so fc6 sees 512 x 7 x 7 values as in VGG16 (the pooling
    that shrinks 224 to 7 has no weights and is left out)."""
    model = blobcast.Model()
    model.name = "VGG16-size"
    model.layers.append(blobcast.Layer("data", "Input", tops=["data"],
                                       input_param={"shape": [{"dim": [1, 3, 7, 7]}]}))
    rng = np.random.default_rng(0)
    previous, channels = "data", 3
    for name, shape in VGG16:
        outputs = max(1, int(shape[0] * scale))
        kind = "InnerProduct" if name.startswith("fc") else "Convolution"
        inputs = channels * 49 if name == "fc6" else channels
        shape = (outputs, inputs) + shape[2:]
        weight = rng.standard_normal(shape, dtype=np.float32) * np.float32(0.01)
        layer = blobcast.Layer(name, kind, bottoms=[previous], tops=[name],
                               blobs=[weight, np.zeros(outputs, np.float32)])
        layer.type_params.num_output = outputs
        if kind == "Convolution":
            layer.type_params.kernel_size.append(3)
            layer.type_params.pad.append(1)
        model.layers.append(layer)
        previous, channels = name, outputs
    return model


# The command line as a user runs it, in a fresh interpreter: imports, reading,
# writing and the checks all count. The peak is VmHWM, read as it exits.
CLI_CHILD = r"""
import atexit, sys
def report():
    peak_kb = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
    sys.stderr.write(f"\nVMHWM {int(peak_kb) * 1024}\n")
atexit.register(report)
sys.argv = ["blobcast"] + sys.argv[1:]
from blobcast.cli import main
main()
"""


# An installed package has its bytecode compiled; a shell that forbids writing
# it would time compiling blobcast's sources on every run instead.
USER_ENVIRONMENT = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def measure_cli(arguments: list[str], dst: str) -> tuple[float, int]:
    """Wall seconds and peak bytes of `blobcast ARGUMENTS` in a fresh process
    (the output removed first, as a first conversion finds no file there)."""
    for stale in (dst, dst + ".data"):
        if os.path.exists(stale):
            os.remove(stale)
    os.sync()  # the last run's writes reach the disk before this one starts
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CLI_CHILD, *arguments], capture_output=True,
                          text=True, env=USER_ENVIRONMENT)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"blobcast {' '.join(arguments)} failed: {done.stderr.strip()}")
    peak = int(done.stderr.rsplit("VMHWM", 1)[1].split()[0])
    return seconds, peak


def measure_cp(src: str, dst: str) -> float:
    if os.path.exists(dst):
        os.remove(dst)
    os.sync()
    start = time.perf_counter()
    subprocess.run(["cp", src, dst], check=True)
    return time.perf_counter() - start


def cli_table(folder: str, runs: int) -> dict:
    """Every direction through the command line, with --no-verify and with
    the default checks, beside `cp` of the same .caffemodel (run between
    them, so both see the same machine)."""
    binary = os.path.join(folder, "vgg16.caffemodel")
    sources = {"caffemodel": binary, "h5": os.path.join(folder, "vgg16.caffemodel.h5"),
               "onnx": os.path.join(folder, "vgg16.onnx")}
    directions = [("caffemodel", "h5", "cli.caffemodel.h5"), ("h5", "caffemodel", "cli.caffemodel"),
                  ("caffemodel", "onnx", "cli.onnx"), ("onnx", "caffemodel", "cli_onnx.caffemodel")]
    copies = []
    size = os.path.getsize(binary)
    measure_cli(["convert", binary, os.path.join(folder, "warm.onnx"), "--force"],
                os.path.join(folder, "warm.onnx"))  # bytecode written, imports in the page cache
    rows = []
    for source, target, name in directions:
        dst = os.path.join(folder, name)
        for checks in ("--no-verify", "checked"):
            arguments = ["convert", sources[source], dst, "--force"]
            arguments += ["--no-verify"] if checks != "checked" else []
            runs_done = []
            for _ in range(runs):
                copies.append(measure_cp(binary, os.path.join(folder, "cp.bin")))
                runs_done.append(measure_cli(arguments, dst))
            seconds = statistics.median(r[0] for r in runs_done)
            peak = statistics.median(r[1] for r in runs_done)
            rows.append({"case": f"{source} -> {target}, {checks}", "seconds": seconds,
                         "peak_mb": peak / 1e6, "peak_x_model": peak / size})
    copy = statistics.median(copies)
    for row in rows:
        row["x_cp"] = row["seconds"] / copy
    return {"cp_seconds": copy, "rows": rows}


def measure(kind: str, src: str, dst: str) -> tuple[float, int]:
    result = subprocess.run([sys.executable, "-c", CHILD, kind, src, dst],
                            capture_output=True, text=True, check=True)
    seconds, peak = result.stdout.split()
    return float(seconds), int(peak)


def copy_seconds(src: str, dst: str) -> float:
    start = time.perf_counter()
    shutil.copyfile(src, dst)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="shrink the model for a quick run")
    parser.add_argument("--keep", help="folder for the generated files (default: a temp folder)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--cli", action="store_true",
                        help="the command line as a user runs it, every direction, instead")
    options = parser.parse_args()
    folder = options.keep or tempfile.mkdtemp(prefix="blobcast-bench-")
    os.makedirs(folder, exist_ok=True)
    binary = os.path.join(folder, "vgg16.caffemodel")
    hdf5 = os.path.join(folder, "vgg16.caffemodel.h5")
    if not os.path.exists(binary):
        blobcast.save(make_model(options.scale), binary)
        blobcast.save(blobcast.load(binary), hdf5)
    if not os.path.exists(os.path.join(folder, "vgg16.onnx")):
        blobcast.save(blobcast.load(binary), os.path.join(folder, "vgg16.onnx"))
    size = os.path.getsize(binary)
    if options.cli:
        table = cli_table(folder, options.runs)
        if options.json:
            print(json.dumps({"model_bytes": size, **table}, indent=2))
        else:
            print(f"model: {size / 1e6:.0f} MB .caffemodel; `cp` (a process) median "
                  f"{table['cp_seconds']:.3f} s; medians of {options.runs} runs, each a fresh process")
            print(f"{'blobcast convert':34} {'seconds':>8} {'x cp':>6} {'peak MB':>8} {'peak/model':>10}")
            for row in table["rows"]:
                print(f"{row['case']:34} {row['seconds']:8.3f} {row['x_cp']:6.1f} {row['peak_mb']:8.0f} "
                      f"{row['peak_x_model']:10.2f}")
        if not options.keep:
            shutil.rmtree(folder)
        return
    cases = [
        ("caffemodel -> h5", "blobcast", binary, os.path.join(folder, "out.caffemodel.h5")),
        ("h5 -> caffemodel", "blobcast", hdf5, os.path.join(folder, "out.caffemodel")),
        ("caffemodel -> h5, checked (convert)", "blobcast-verify", binary,
         os.path.join(folder, "checked.caffemodel.h5")),
        ("baseline: protobuf caffemodel -> h5", "protobuf", binary,
         os.path.join(folder, "pb.caffemodel.h5")),
        ("baseline: protobuf h5 -> caffemodel", "protobuf-write", hdf5,
         os.path.join(folder, "pb.caffemodel")),
        ("caffemodel -> onnx", "blobcast", binary, os.path.join(folder, "out.onnx")),
        ("onnx -> caffemodel", "blobcast", os.path.join(folder, "vgg16.onnx"),
         os.path.join(folder, "from_onnx.caffemodel")),
        ("inspect caffemodel", "inspect", binary, ""),
        ("inspect h5", "inspect", hdf5, ""),
    ]
    rows = []
    copies = [copy_seconds(binary, os.path.join(folder, "copy.bin")) for _ in range(options.runs)]
    copy = statistics.median(copies)
    for label, kind, src, dst in cases:
        runs = [measure(kind, src, dst) for _ in range(options.runs)]
        seconds = statistics.median(r[0] for r in runs)
        peak = statistics.median(r[1] for r in runs)
        rows.append({"case": label, "seconds": seconds, "x_copy": seconds / copy,
                     "throughput_mb_s": size / seconds / 1e6, "peak_mb": peak / 1e6,
                     "peak_x_model": peak / size})
    if options.json:
        print(json.dumps({"model_bytes": size, "copy_seconds": copy, "rows": rows}, indent=2))
        return
    print(f"model: {size / 1e6:.0f} MB .caffemodel; cp median {copy:.3f} s; "
          f"medians of {options.runs} runs")
    print(f"{'case':40} {'seconds':>8} {'x cp':>7} {'MB/s':>7} {'peak MB':>8} {'peak/model':>10}")
    for row in rows:
        print(f"{row['case']:40} {row['seconds']:8.3f} {row['x_copy']:7.1f} "
              f"{row['throughput_mb_s']:7.0f} {row['peak_mb']:8.0f} {row['peak_x_model']:10.2f}")
    if not options.keep:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
