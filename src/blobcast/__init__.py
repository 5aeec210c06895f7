"""blobcast: convert, inspect and verify Caffe models.

The public names are imported on first use, so that the command line can
take over SIGINT/SIGTERM before the heavy imports (NumPy, protobuf) run.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_HOMES = {
    "api": ("ConversionReport", "ForwardCheck", "convert", "load", "save", "training_step"),
    "errors": ("BlobcastError", "BlobcastWarning", "CheckFailed", "FormatError"),
    "model": ("Blob", "Layer", "Model", "ParamRef"),
    "params": ("Message",),
    "solver": ("SolverState",),
    "tensor": ("ArrayTensor", "LazyTensor", "Tensor"),
    "training": ("Training", "optimizer_state"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "load", "save", "convert", "ConversionReport", "ForwardCheck", "Model", "Layer", "Blob", "ParamRef",
    "Message", "SolverState", "Tensor", "ArrayTensor", "LazyTensor", "BlobcastError",
    "BlobcastWarning", "CheckFailed", "FormatError", "Training", "optimizer_state", "training_step",
    "__version__",
]


def __getattr__(name: str):
    home = _HOME_OF.get(name)
    if home is None:
        try:  # a submodule reached as an attribute (blobcast.api)
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
