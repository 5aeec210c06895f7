"""ONNX handlers, one module per layer family; importing this package
registers them all."""

from . import (  # noqa: F401
    activation,
    convolution,
    dense,
    detection,
    loss,
    normalization,
    pooling,
    regions,
    resample,
    structure,
)
from .registry import (
    EXPORTERS,
    FUNCTION_EXPORTS,
    IMPORTERS,
    ExportError,
    Unsupported,
    exported_as_function,
    exporter,
    importer,
)

__all__ = ["EXPORTERS", "FUNCTION_EXPORTS", "IMPORTERS", "ExportError", "Unsupported",
           "exported_as_function", "exporter", "importer"]
