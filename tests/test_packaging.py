"""The package ships blobcast.converters and the generated schema in a wheel."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import blobcast.converters

from .conftest import ROOT


def test_converters_import_from_the_package():
    assert Path(blobcast.converters.__file__).parent.name == "converters"
    from blobcast.converters import caffe_pb2  # noqa: F401


@pytest.mark.slow
def test_wheel_contains_the_converters(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    wheel = next(tmp_path.glob("blobcast-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {str(p.relative_to(ROOT / "src")) for p in (ROOT / "src" / "blobcast").rglob("*.py")}
    sources |= {"blobcast/converters/" + str(p.relative_to(ROOT / "converters"))
                for p in (ROOT / "converters").rglob("*.py")}
    assert sources <= names, sorted(sources - names)  # every module ships
    assert "blobcast/py.typed" in names  # type checkers read the annotations
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("/METADATA"))).decode()
    assert "License-Expression: MIT" in metadata
    assert any(n.endswith("licenses/LICENSE") for n in names)
    assert "Provides-Extra: gpu-cuda12" in metadata and "Provides-Extra: gpu-cuda13" in metadata
    # and the installed wheel works on its own, outside the source tree
    target = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                             str(target), str(wheel)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    code = ("import blobcast, blobcast.engine, blobcast.converters.onnx_format, blobcast.cli; "
            "print(blobcast.engine.__file__)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=tmp_path, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0 and str(target) in result.stdout, result.stderr


def test_core_model_does_not_import_file_format_libraries():
    code = ("import sys, blobcast.model, blobcast.params, blobcast.tensor, blobcast.weights, "
            "blobcast.solver, blobcast.compare, blobcast.engine; "
            "print(sorted(m for m in ('google.protobuf', 'h5py', 'onnx') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
