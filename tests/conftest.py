from __future__ import annotations

import mmap
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CAFFE = ROOT / "fixtures" / "caffe"          # files written by real Caffe
GENERATED = ROOT / "fixtures" / "generated"  # files written by fixtures/make_fixtures.py
SOLVER_TYPES = ["sgd", "nesterov", "adagrad", "rmsprop", "adadelta", "adam"]


def pytest_configure(config):
    # The default run leaves out slow tests (addopts: -m "not slow"); a test
    # asked for by its node id (tests/cli/test_cli.py::test_y) runs whatever its marks.
    if config.option.markexpr == "not slow" and any("::" in arg for arg in config.args):
        config.option.markexpr = ""


@pytest.fixture
def caffe_dir(tmp_path) -> Path:
    """A writable copy of the real-Caffe fixtures (tests must never modify inputs)."""
    target = tmp_path / "caffe"
    shutil.copytree(CAFFE, target)
    for path in target.rglob("*"):
        path.chmod(0o644 if path.is_file() else 0o755)
    return target


SSD = CAFFE / "ssd"  # nets and blobs written by the SSD fork (weiliu89/caffe)


@pytest.fixture(scope="session")
def ssd_synth_a_blobs() -> dict:
    """Every blob of the SSD fork's synth_a net as the engine computes it, run
    once for the session (its eleven DetectionOutput layers take seconds).
    Read-only: the tests share it."""
    import numpy as np

    import blobcast
    from blobcast.engine import Net

    model = blobcast.load(SSD / "synth_a.caffemodel", prototxt=SSD / "synth_a.prototxt")
    blobs = Net(model).forward({"data": np.load(SSD / "synth_a_input_data.npy")}, keep_all=True)
    for array in blobs.values():
        array.setflags(write=False)
    return blobs


def without_detection_output(model):
    """The model without its DetectionOutput layers, for tests of the layers
    before them (those layers are most of what the SSD nets cost to run)."""
    model.layers = [layer for layer in model.layers if layer.type != "DetectionOutput"]
    return model


def read_bytes(path) -> bytes:
    return Path(path).read_bytes()


def views_a_file_mapping(array) -> bool:
    """Whether an array is a view of a memory-mapped file (no copy)."""
    base = array
    while getattr(base, "base", None) is not None:
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    return isinstance(base, mmap.mmap)


@pytest.fixture
def compiled_everywhere(monkeypatch):
    """The compiled kernels (the `fast` extra) on every blob they take, on
    two threads; yields how many times each kernel ran. Skipped where numba
    is not installed."""
    pytest.importorskip("numba")
    from blobcast.layers import compiled

    monkeypatch.setattr(compiled, "MIN_VALUES", 0)
    monkeypatch.setattr(compiled, "MIN_SHARE_VALUES", 0)
    monkeypatch.setattr(compiled, "MIN_POOLED_PLANE", 0)
    monkeypatch.setattr(compiled, "FROM_PASS", 0)
    monkeypatch.setenv("BLOBCAST_COMPILED", "1")
    monkeypatch.setattr(compiled, "compiled_threads", lambda: 2)
    calls: dict = {}
    original = compiled._in_ranges

    def counting(kernel, planes, *arguments):
        calls[kernel.__name__] = calls.get(kernel.__name__, 0) + 1
        return original(kernel, planes, *arguments)

    monkeypatch.setattr(compiled, "_in_ranges", counting)
    return calls
