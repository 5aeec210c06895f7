from __future__ import annotations

import mmap
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CAFFE = ROOT / "fixtures" / "caffe"          # files written by real Caffe
GENERATED = ROOT / "fixtures" / "generated"  # files written by fixtures/make_fixtures.py
SOLVER_TYPES = ["sgd", "nesterov", "adagrad", "rmsprop", "adadelta", "adam"]


@pytest.fixture
def caffe_dir(tmp_path) -> Path:
    """A writable copy of the real-Caffe fixtures (tests must never modify inputs)."""
    target = tmp_path / "caffe"
    shutil.copytree(CAFFE, target)
    for path in target.rglob("*"):
        path.chmod(0o644 if path.is_file() else 0o755)
    return target


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
