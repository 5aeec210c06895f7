"""ONNX handlers, one module per layer family; importing this package
registers them all."""

from . import activation, convolution, dense, forks, normalization, pooling, structure  # noqa: F401
from .registry import EXPORTERS, IMPORTERS, ExportError, Unsupported, exporter, importer

__all__ = ["EXPORTERS", "IMPORTERS", "ExportError", "Unsupported", "exporter", "importer"]
