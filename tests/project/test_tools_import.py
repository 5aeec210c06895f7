"""Every benchmark and script still imports: one that names a function or a
module the package no longer has fails here, not when someone next runs it."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from ..conftest import ROOT

# Libraries a tool may need that the test environment need not have (the
# development extra's, and what make_torch_onnx.py exports from).
OPTIONAL = {"torch", "torchvision", "cupy", "grpc_tools", "threadpoolctl", "psutil"}

TOOLS = sorted(path for folder in ("benchmarks", "scripts") for path in (ROOT / folder).glob("*.py"))


@pytest.mark.parametrize("path", TOOLS, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_every_benchmark_and_script_imports(path, monkeypatch):
    monkeypatch.syspath_prepend(str(path.parent))  # siblings import each other (nets.py)
    monkeypatch.syspath_prepend(str(ROOT))
    name = f"_tool_{path.parent.name}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while it runs
    try:
        spec.loader.exec_module(module)
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] not in OPTIONAL:
            raise
        pytest.skip(f"needs {error.name}")
    finally:
        sys.modules.pop(name, None)
    if '__name__ == "__main__"' in path.read_text():  # a tool, not a helper module (nets.py)
        assert callable(getattr(module, "main", None)), "a tool runs through its main()"
