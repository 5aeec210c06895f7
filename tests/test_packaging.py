"""The package ships blobcast.converters and the generated schema in a wheel."""

import subprocess
import sys
import zipfile
from pathlib import Path

import blobcast.converters

from .conftest import ROOT


def test_converters_import_from_the_package():
    assert Path(blobcast.converters.__file__).parent.name == "converters"
    from blobcast.converters import caffe_pb2  # noqa: F401


def test_wheel_contains_the_converters(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    wheel = next(tmp_path.glob("blobcast-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for required in ("blobcast/converters/caffe_pb2.py", "blobcast/converters/caffemodel.py",
                     "blobcast/schema.py", "blobcast/cli.py"):
        assert required in names


def test_core_model_does_not_import_file_format_libraries():
    code = ("import sys, blobcast.model, blobcast.params, blobcast.tensor, blobcast.weights, "
            "blobcast.solver, blobcast.compare, blobcast.engine; "
            "print(sorted(m for m in ('google.protobuf', 'h5py', 'onnx') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
