"""Style and the import boundary: the model never imports file-format libraries."""

import shutil
import subprocess
import sys

import pytest

from .conftest import ROOT


def test_ruff_passes():
    if shutil.which("ruff") is None and not (ROOT / ".venv" / "bin" / "ruff").exists():
        pytest.skip("ruff is not installed")
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "src", "converters", "tests",
                             "scripts", "fixtures", "benchmarks"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
