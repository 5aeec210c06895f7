"""A longer mutation-fuzzing run of every reader than the test suite's.

    python benchmarks/fuzz_readers.py [--iterations 2000] [--seed 1]

Prints how many mutated files were read, refused with blobcast's error, or
failed any other way (a defect: each is listed).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import blobcast  # noqa: E402
from tests.fuzzing import fuzz_readers  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000, help="mutations per source file")
    parser.add_argument("--seed", type=int, default=1)
    options = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="blobcast-fuzz-"))
    generated, caffe = ROOT / "fixtures" / "generated", ROOT / "fixtures" / "caffe"
    blobcast.convert(generated / "shared.caffemodel", folder / "ours.caffemodel.h5")
    blobcast.convert(generated / "lenet.caffemodel", folder / "lenet.onnx")
    np.save(folder / "mean.npy", np.random.RandomState(0).rand(1, 3, 4, 4).astype(np.float32))
    blobcast.convert(folder / "mean.npy", folder / "mean.binaryproto")
    sources = [str(p) for p in (
        generated / "lenet.caffemodel", caffe / "v1" / "lenet_v0.caffemodel",
        caffe / "zoo" / "zoo.caffemodel", caffe / "zoo" / "zoo.caffemodel.h5",
        folder / "ours.caffemodel.h5", caffe / "zoo" / "zoo_deploy.prototxt",
        caffe / "lenet" / "snapshots" / "adam_bp_iter_5.solverstate",
        caffe / "lenet" / "snapshots" / "adam_h5_iter_5.solverstate.h5", folder / "lenet.onnx",
        folder / "mean.binaryproto", folder / "mean.npy")]
    work = folder / "cases"
    work.mkdir()
    started = time.perf_counter()
    report = fuzz_readers(sources, str(work), options.iterations, options.seed)
    print(f"{report.cases} mutated files in {time.perf_counter() - started:.0f} s: {report.read} read, "
          f"{report.refused} refused cleanly, {len(report.failures)} failed otherwise")
    for failure in report.failures:
        print("  " + failure)
    sys.exit(1 if report.failures else 0)


if __name__ == "__main__":
    main()
