"""The package ships blobcast.converters and the generated schema in a wheel; its sdist and
metadata are what a registry shows."""

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import blobcast.converters

from ..conftest import ROOT


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
            "blobcast.solver, blobcast.check.compare, blobcast.engine; "
            "print(sorted(m for m in ('google.protobuf', 'h5py', 'onnx') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


@pytest.mark.slow
def test_the_sdist_ships_no_tests_and_the_metadata_a_registry_shows(tmp_path):
    build = ("import sys; from setuptools import build_meta; "
             "print(build_meta.build_sdist(sys.argv[1]))")
    result = subprocess.run([sys.executable, "-c", build, str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    with tarfile.open(tmp_path / result.stdout.strip().splitlines()[-1]) as sdist:
        names = [name.split("/", 1)[1] for name in sdist.getnames() if "/" in name]
        metadata = sdist.extractfile(next(m for m in sdist.getmembers() if m.name.count("/") == 1
                                          and m.name.endswith("/PKG-INFO"))).read().decode()
    # its tests need the repository's fixtures, docs and scripts: none ship, so none fail
    assert not [name for name in names if name.startswith("tests/")]
    assert "proto/caffe.proto" in names and "README.md" in names and "LICENSE" in names
    fields = [line.split(": ", 1) for line in metadata.split("\n\n")[0].splitlines() if ": " in line]
    values = {}
    for key, value in fields:
        values.setdefault(key, []).append(value)
    assert values["License-Expression"] == ["MIT"] and values["Author"]
    python = "Programming Language :: Python :: 3."
    versions = {c.rsplit(":: ", 1)[1] for c in values["Classifier"] if c.startswith(python)}
    assert versions == {"3.10", "3.11", "3.12", "3.13"}
    assert "caffe" in values["Keywords"][0] and "onnx" in values["Keywords"][0]
    assert values["Description-Content-Type"] == ["text/markdown"]
    # no upper bound that makes pip report a conflict when another package needs a newer one
    required = [r for r in values["Requires-Dist"] if "extra ==" not in r]
    assert [r for r in required if "<" in r] == ["protobuf<8,>=7.35.1"]
    assert not [r for r in required if r.startswith("ml_dtypes")]
