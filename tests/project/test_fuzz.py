"""Bounded mutation fuzzing of every reader (benchmarks/fuzz_readers.py runs longer)."""

import json
import subprocess
import sys

import numpy as np
import pytest

import blobcast

from ..conftest import CAFFE, GENERATED, ROOT


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
    modular = folder / "modular.prototxt"
    from ..blobcast.test_modules import NESTED

    modular.write_text(NESTED)
    steps = ROOT / "fixtures" / "steps"
    trained = folder / "trained.onnx"
    blobcast.convert(steps / "adam_iter_3.solverstate", trained, solver=steps / "adam_solver.prototxt")
    return [str(p) for p in (modular, trained,
        GENERATED / "lenet.caffemodel", CAFFE / "v1" / "lenet_v0.caffemodel",
        CAFFE / "shared" / "snapshots" / "shared_h5_iter_4.caffemodel.h5", own_h5,
        CAFFE / "lenet" / "lenet_deploy.prototxt",
        CAFFE / "lenet" / "snapshots" / "adam_bp_iter_5.solverstate",
        CAFFE / "lenet" / "snapshots" / "adam_h5_iter_5.solverstate.h5", model_onnx, blob,
        folder / "mean.npy")]


@pytest.mark.slow
def test_mutated_files_read_or_raise_blobcast_errors(sources, tmp_path):
    # In a child process with a hard limit: a hang inside a C library would
    # not answer the per-case alarm, and must fail this test, not stall it.
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); from tests.fuzzing import fuzz_readers; "
            "r = fuzz_readers(json.loads(sys.argv[2]), sys.argv[3], iterations=40, seed=20261122); "
            "print(json.dumps(r.__dict__))")
    try:
        result = subprocess.run([sys.executable, "-c", code, str(ROOT), json.dumps(sources), str(tmp_path)],
                                capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail("a reader did not answer: the fuzz run passed its 300 s limit")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["failures"] == []
    assert report["cases"] == 40 * len(sources)
    assert report["refused"] > report["cases"] // 4  # the mutations do break things
