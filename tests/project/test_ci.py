"""CI finds the oldest and the newest Python that pyproject.toml declares, or
stops and says which one is missing."""

import os
import subprocess
import sys

from ..conftest import ROOT

PYTHONS = ROOT / ".ci" / "pythons.py"


def _fake_pyenv(root, *versions):
    """A pyenv tree whose interpreters only answer the version question."""
    for version in versions:
        major, minor = version.split(".")[:2]
        folder = root / "versions" / version / "bin"
        folder.mkdir(parents=True)
        interpreter = folder / f"python{major}.{minor}"
        interpreter.write_text(f"#!/bin/sh\necho {major} {minor}\n")
        interpreter.chmod(0o755)
    return root


def _find(pyenv_root):
    environment = {**os.environ, "PYENV_ROOT": str(pyenv_root), "PATH": "/nonexistent"}
    return subprocess.run([sys.executable, str(PYTHONS)], capture_output=True, text=True,
                          env=environment, timeout=60)


def test_ci_takes_the_oldest_and_newest_declared_python(tmp_path):
    root = _fake_pyenv(tmp_path, "3.10.2", "3.10.13", "3.11.7", "3.13.0", "3.14.0")
    found = _find(root)
    assert found.returncode == 0, found.stderr
    # requires-python's lower bound, the highest classifier; the latest patch release
    assert found.stdout.split() == [str(root / "versions" / "3.10.13" / "bin" / "python3.10"),
                                    str(root / "versions" / "3.13.0" / "bin" / "python3.13")]


def test_ci_stops_when_a_declared_python_is_missing(tmp_path):
    found = _find(_fake_pyenv(tmp_path, "3.10.13", "3.12.1"))
    assert found.returncode == 1 and found.stdout == ""
    assert "no Python 3.13 found" in found.stderr
