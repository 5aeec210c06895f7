"""What `verify --all-blobs` costs beyond the two forward passes it needs.

Writes a net of benchmarks/nets.py as .caffemodel and as .caffemodel.h5,
then times, in one process, the two forward passes alone (every blob kept,
as verify keeps them) and `verify_files(..., all_blobs=True)` on the same
input; medians, and the ratio of the two.

    python benchmarks/verify_cost.py [--net ResNet-50-1by2] [--batch 8] [--runs 3]
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
from blobcast.engine import Net
from blobcast.verify import RunOptions, verify_files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="ResNet-50-1by2", choices=list(NETS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="blobcast-verify-") as folder:
        prototxt, weights = write_net(options.net, folder)
        model = blobcast.load(weights, prototxt=prototxt)
        hdf5 = os.path.join(folder, "net.caffemodel.h5")
        blobcast.save(model, hdf5)
        shape = f"data={options.batch},3,224,224"
        x = np.random.default_rng(0).standard_normal((options.batch, 3, 224, 224)).astype(np.float32)

        def passes():
            for path in (weights, hdf5):
                net = Net(blobcast.load(path, prototxt=prototxt if path == weights else None),
                          device=options.device)
                net.forward({"data": net.xp.asarray(x)}, keep_all=True)
                net.release()

        def verify():
            report = verify_files(weights, hdf5, RunOptions(prototxt=prototxt, inputs=(shape,),
                                                            all_blobs=True, device=options.device))
            assert report.passed, report.problem
            return len(report.compared)

        blobs = verify()
        timings = {"passes": [], "verify": []}
        for _ in range(options.runs):
            for name, action in (("passes", passes), ("verify", verify)):
                start = time.perf_counter()
                action()
                timings[name].append(time.perf_counter() - start)
    forward = statistics.median(timings["passes"])
    checked = statistics.median(timings["verify"])
    print(f"{options.net}, batch {options.batch}, {options.device}, {blobs} blobs compared; "
          f"medians of {options.runs}")
    print(f"two forward passes, every blob kept: {forward:.3f} s")
    print(f"verify --all-blobs:                  {checked:.3f} s ({checked / forward:.2f}x)")


if __name__ == "__main__":
    main()
