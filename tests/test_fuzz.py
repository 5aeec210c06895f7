"""Bounded mutation fuzzing of every reader (benchmarks/fuzz_readers.py runs longer)."""

import numpy as np
import pytest

import blobcast

from .conftest import CAFFE, GENERATED
from .fuzzing import fuzz_readers


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz_sources")
    own_h5 = folder / "ours.caffemodel.h5"
    blobcast.convert(GENERATED / "shared.caffemodel", own_h5)
    model_onnx = folder / "lenet.onnx"
    blobcast.convert(GENERATED / "lenet.caffemodel", model_onnx)
    blob = folder / "mean.binaryproto"
    np.save(folder / "mean.npy", np.random.RandomState(0).rand(1, 3, 4, 4).astype(np.float32))
    blobcast.convert(folder / "mean.npy", blob)
    return [str(p) for p in (
        GENERATED / "lenet.caffemodel", CAFFE / "v1" / "lenet_v0.caffemodel",
        CAFFE / "shared" / "snapshots" / "shared_h5_iter_4.caffemodel.h5", own_h5,
        CAFFE / "lenet" / "lenet_deploy.prototxt",
        CAFFE / "lenet" / "snapshots" / "adam_bp_iter_5.solverstate",
        CAFFE / "lenet" / "snapshots" / "adam_h5_iter_5.solverstate.h5", model_onnx, blob,
        folder / "mean.npy")]


def test_mutated_files_read_or_raise_blobcast_errors(sources, tmp_path):
    report = fuzz_readers(sources, str(tmp_path), iterations=40, seed=20261122)
    assert report.failures == []
    assert report.cases == 40 * len(sources)
    assert report.refused > report.cases // 4  # the mutations do break things
