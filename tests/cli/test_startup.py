"""What a command imports: the onnx library only when an ONNX file is involved."""

import subprocess
import sys
from pathlib import Path

import pytest

ZOO = Path(__file__).resolve().parents[2] / "fixtures" / "caffe" / "zoo" / "zoo.caffemodel"

PROBE = """
import sys
from blobcast.cli import main
sys.argv[0] = "blobcast"
try:
    main()
except SystemExit as stop:
    assert not stop.code, stop.code
print("onnx" in sys.modules)
"""


def _imports_onnx(*arguments) -> bool:
    done = subprocess.run([sys.executable, "-c", PROBE, *arguments], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1] == "True"


@pytest.mark.slow
def test_caffe_formats_alone_never_import_onnx(tmp_path):
    assert not _imports_onnx("convert", str(ZOO), str(tmp_path / "zoo.caffemodel.h5"), "--no-verify")
    assert not _imports_onnx("inspect", str(ZOO))


def test_an_onnx_file_imports_onnx(tmp_path):
    assert _imports_onnx("convert", str(ZOO), str(tmp_path / "zoo.onnx"), "--no-verify")
