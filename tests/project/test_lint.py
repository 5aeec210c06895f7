"""Style and the import boundary: the model never imports file-format libraries."""

import importlib.util
import subprocess
import sys

import pytest

from ..conftest import ROOT


def test_ruff_passes():
    # run as `python -m ruff`: installed in the interpreter running the tests (CI's
    # venvs are not all named .venv, nor on PATH)
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed")
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "src", "converters", "tests",
                             "scripts", "fixtures", "benchmarks"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
