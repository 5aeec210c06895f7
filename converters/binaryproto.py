"""A single BlobProto (.binaryproto), e.g. a mean image, and NumPy's .npy for it."""

from __future__ import annotations

import numpy as np

from blobcast.errors import FormatError
from blobcast.model import Blob, Layer, Model

from .blobproto import BlobFormatError, blob_to_bytes, decode_blob
from .mapping import map_file
from .wire import WireError

NAME = "binaryproto"
SUFFIXES = (".binaryproto",)
DESCRIPTION = "a Caffe BlobProto (a mean file)"
HOLDS = frozenset({"weights", "diffs"})
BLOB_LAYER = "blob"  # the single pseudo-layer that carries a lone blob


def single_blob(model: Model, path: str) -> Blob:
    blobs = [b for layer in model.layers for b in layer.blobs if b is not None]
    if len(blobs) != 1:
        raise FormatError(f"this format holds exactly one blob; the model has {len(blobs)}", path)
    return blobs[0]


def blob_model(blob: Blob, source_format: str) -> Model:
    return Model(layers=[Layer(name=BLOB_LAYER, blobs=[blob])], has_architecture=False,
                 source_format=source_format)


def read(path: str, **_options) -> Model:
    buf = map_file(path)
    try:
        blob = decode_blob(buf, 0, len(buf), "blob")
    except (WireError, BlobFormatError) as error:
        raise FormatError(f"not a valid BlobProto ({error})", path) from error
    return blob_model(blob, NAME)


def write(model: Model, path: str, **_options) -> None:
    blob = single_blob(model, path)
    with open(path, "wb") as handle:
        handle.write(blob_to_bytes(blob))


class NumpyFormat:
    NAME = "npy"
    SUFFIXES = (".npy",)
    DESCRIPTION = "a NumPy array (to and from .binaryproto)"
    HOLDS = frozenset({"weights"})

    @staticmethod
    def read(path: str, **_options) -> Model:
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as error:  # NumPy's header parser raises tokenizer errors too
            raise FormatError(f"not a valid .npy file ({type(error).__name__}: {error})", path) from error
        if array.dtype.kind != "f" or array.dtype.itemsize not in (4, 8):
            raise FormatError(f"holds {array.dtype} values; Caffe blobs are float32 or float64", path)
        return blob_model(Blob(np.asarray(array)), "npy")

    @staticmethod
    def write(model: Model, path: str, **_options) -> None:
        blob = single_blob(model, path)
        with open(path, "wb") as handle:
            np.save(handle, blob.data.numpy(), allow_pickle=False)
