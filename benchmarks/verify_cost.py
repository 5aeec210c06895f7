"""What `verify --all-blobs` and convert's forward check cost beyond the two
forward passes they need.

Writes a net of benchmarks/nets.py as .caffemodel, .caffemodel.h5 and .onnx,
then times, interleaved in one process, each against the passes it needs:
  - verify --all-blobs, .caffemodel against .caffemodel.h5: two engine
    passes, every blob kept (as verify keeps them);
  - verify --all-blobs, .caffemodel against .onnx: one engine pass and one
    onnxruntime pass, every value kept;
  - convert .caffemodel -> .caffemodel.h5 checked, against the same convert
    with --no-verify plus two engine passes of the outputs.
Medians of the runs, and each ratio.

    python benchmarks/verify_cost.py [--net ResNet-50] [--batch 8] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
from nets import NETS, write_net

import blobcast
from blobcast.check import RunOptions, runner_for, verify_files


def _passes(files: list, x: np.ndarray, keep_all: bool, device: str):
    """One forward pass of each file (a Model's arguments, or an .onnx path), as a check runs it."""
    def run():
        for file in files:
            side = runner_for(file if isinstance(file, str) else blobcast.load(*file), device=device)
            side.forward({"data": x}, keep_all=keep_all)
    return run


def _verify(a: str, b: str, prototxt: str, shape: str, device: str, atol: float = 1e-5):
    def run():
        report = verify_files(a, b, RunOptions(prototxt=prototxt, inputs=(shape,), all_blobs=True,
                                               device=device), atol=atol)
        assert report.passed, (report.problem, report.first_mismatch)
    return run


def _convert(weights: str, prototxt: str, folder: str, shape: str, checked: bool):
    from blobcast.check import ForwardCheck

    def run():
        check = ForwardCheck(inputs={"data": [int(d) for d in shape.split("=")[1].split(",")]}) \
            if checked else False
        blobcast.convert(weights, os.path.join(folder, "converted.caffemodel.h5"),
                         prototxt=prototxt, overwrite=True, forward_check=check)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="ResNet-50", choices=list(NETS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", default="h5,onnx,convert",
                        help="comma-separated: h5, onnx, convert")
    options = parser.parse_args()
    chosen = options.only.split(",")
    with tempfile.TemporaryDirectory(prefix="blobcast-verify-") as folder:
        prototxt, weights = write_net(options.net, folder)
        model = blobcast.load(weights, prototxt=prototxt)
        hdf5, onnx_path = os.path.join(folder, "net.caffemodel.h5"), os.path.join(folder, "net.onnx")
        blobcast.save(model, hdf5)
        if "onnx" in chosen:
            blobcast.convert(weights, onnx_path, prototxt=prototxt, forward_check=False,
                             onnx_options={"dynamic_batch": True})
        del model
        shape = f"data={options.batch},3,224,224"
        x = np.random.default_rng(0).standard_normal((options.batch, 3, 224, 224)).astype(np.float32)
        caffe, h5 = (weights, prototxt), (hdf5,)
        pairs = {
            "h5": ("verify --all-blobs .caffemodel .caffemodel.h5",
                   _passes([caffe, h5], x, True, options.device),
                   _verify(weights, hdf5, prototxt, shape, options.device)),
            "onnx": ("verify --all-blobs .caffemodel .onnx --atol 0.1",
                     _passes([caffe, onnx_path], x, True, options.device),
                     # another float32 implementation: a few blobs of ResNet-50 differ
                     # by float32 rounding, up to 0.02 where values reach 13,000
                     _verify(weights, onnx_path, prototxt, shape, options.device, atol=0.1)),
            "convert": ("convert .caffemodel -> .h5, forward check",
                        lambda: (_convert(weights, prototxt, folder, shape, False)(),
                                 _passes([caffe, h5], x, False, options.device)()),
                        _convert(weights, prototxt, folder, shape, True)),
        }
        timings = {name: ([], []) for name in chosen}
        for run in range(options.runs):
            for name in chosen:
                for times, action in zip(timings[name], pairs[name][1:]):
                    start = time.perf_counter()
                    action()
                    times.append(time.perf_counter() - start)
                needed, measured = (t[-1] for t in timings[name])
                print(f"run {run + 1}, {name}: {measured:.3f} s against {needed:.3f} s", flush=True)
    print(f"{options.net}, batch {options.batch}, {options.device}; medians of {options.runs} "
          "interleaved runs; the ratio is the median of each run's ratio")
    for name in chosen:
        needed, measured = (statistics.median(t) for t in timings[name])
        ratios = [m / n for n, m in zip(*timings[name])]
        print(f"{pairs[name][0]:48s} {measured:7.3f} s against {needed:7.3f} s for the passes "
              f"it needs: {statistics.median(ratios):.2f}x (each run: "
              + ", ".join(f"{r:.2f}" for r in sorted(ratios)) + ")")


if __name__ == "__main__":
    main()
