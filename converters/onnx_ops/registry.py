"""The two registries of ONNX handlers: Caffe layer type -> exporter, ONNX
op -> importer. Handlers live beside their layer family; registering one
name twice is refused."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from blobcast.errors import BlobcastError

EXPORTERS: dict = {}  # Caffe type -> handler(builder, layer, ins, outs)
FUNCTION_EXPORTS: dict = {}  # Caffe type -> which of its layers become one function call each
IMPORTERS: dict = {}  # ONNX op -> handler(importer, node, attrs)
LOSS_EXPORTERS: dict = {}  # Caffe loss type -> its term of a training step's loss
ELEMENT_TYPE = {np.dtype("<f4"): TensorProto.FLOAT, np.dtype("<f8"): TensorProto.DOUBLE}


class ExportError(BlobcastError):
    pass


class NoStandardForm(ExportError):
    """This layer's settings have no standard ONNX form: it is written as a
    custom-domain node instead (refused with --strict)."""


class Unsupported(Exception):
    """An ONNX node the importer cannot turn into a Caffe layer (and why)."""


def _registrar(table: dict, what: str):
    def register(name: str):
        def decorate(handler):
            if name in table:
                raise RuntimeError(f"{what} {name!r} is registered twice")
            table[name] = handler
            return handler

        return decorate

    return register


_exporter = _registrar(EXPORTERS, "ONNX exporter for")


NEWEST_OPSET: dict = {}  # Caffe type -> the newest opset whose ops for it onnxruntime runs


def exporter(name: str, as_function=False, newest_opset: int | None = None):
    """Register a Caffe type's exporter. With `as_function` (True, or a test
    of the layer), the nodes it writes become the body of a model-local
    function (standard ops that runtimes inline) called by one node that
    carries the layer's settings, so the layer reads as one node and imports
    back as itself."""
    if newest_opset is not None:
        NEWEST_OPSET[name] = newest_opset
    if as_function:
        FUNCTION_EXPORTS[name] = as_function if callable(as_function) else (lambda layer: True)
    return _exporter(name)


def exported_as_function(layer) -> bool:
    test = FUNCTION_EXPORTS.get(layer.type)
    return bool(test and test(layer))

importer = _registrar(IMPORTERS, "ONNX importer for")
loss_exporter = _registrar(LOSS_EXPORTERS, "ONNX loss exporter for")
