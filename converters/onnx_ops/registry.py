"""The two registries of ONNX handlers: Caffe layer type -> exporter, ONNX
op -> importer. Handlers live beside their layer family; registering one
name twice is refused."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from blobcast.errors import BlobcastError

EXPORTERS: dict = {}  # Caffe type -> handler(builder, layer, ins, outs)
IMPORTERS: dict = {}  # ONNX op -> handler(importer, node, attrs)
ELEMENT_TYPE = {np.dtype("<f4"): TensorProto.FLOAT, np.dtype("<f8"): TensorProto.DOUBLE}


class ExportError(BlobcastError):
    pass


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


exporter = _registrar(EXPORTERS, "ONNX exporter for")
importer = _registrar(IMPORTERS, "ONNX importer for")
