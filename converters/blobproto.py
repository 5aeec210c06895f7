"""BlobProto bytes <-> Blob, without copying tensor data.

Decoding returns tensors that view the (memory-mapped) file; encoding
returns a list of chunks in which the tensor data are array buffers, so a
writer can stream them out. Field order on writing matches what protobuf
(and so Caffe) produces: fields by number.
"""

from __future__ import annotations

from math import prod

import numpy as np
from google.protobuf.message import DecodeError

from blobcast.model import Blob
from blobcast.tensor import MAX_AXES, FileBytes, LazyTensor

from . import caffe_pb2 as pb
from .mapping import FileChunk, MappedFile
from .wire import (
    FIXED32,
    FIXED64,
    LENGTH_DELIMITED,
    VARINT,
    WireError,
    as_signed64,
    encode_tag,
    encode_varint,
    iter_fields,
    length_delimited,
    read_packed_varints,
    read_varint,
)

F4, F8 = np.dtype("<f4"), np.dtype("<f8")
# field number -> (role, dtype)
_ARRAY_FIELDS = {5: ("data", F4), 6: ("diff", F4), 8: ("data", F8), 9: ("diff", F8)}
_LEGACY_FIELDS = {1: 0, 2: 1, 3: 2, 4: 3}


class BlobFormatError(ValueError):
    """A BlobProto whose contents are inconsistent (message says what)."""


def _view(buf, start: int, end: int, dtype: np.dtype, source: str) -> LazyTensor:
    count = (end - start) // dtype.itemsize

    def load(buf=buf, start=start, count=count, dtype=dtype):
        return np.frombuffer(buf, dtype=dtype, count=count, offset=start)

    # Packed repeated floats are little-endian on the wire: the file's bytes are the values.
    in_file = FileBytes(buf, start) if isinstance(buf, MappedFile) else None
    return LazyTensor((count,), dtype, load, source, in_file)


def decode_blob(buf, start: int, end: int, where: str) -> Blob:
    """Decode the BlobProto in buf[start:end]; tensors view `buf`."""
    shape_dims: list[int] | None = None
    legacy = [None, None, None, None]
    arrays: dict[str, tuple[int, int, np.dtype]] = {}
    for number, wire_type, _tag, vstart, vend in iter_fields(buf, start, end):
        if number in _ARRAY_FIELDS:
            role, dtype = _ARRAY_FIELDS[number]
            if wire_type != LENGTH_DELIMITED or role in arrays:
                # Unpacked or split packed values: legal protobuf, never written
                # by Caffe. Let protobuf decode this blob (slower, still exact).
                return _decode_with_protobuf(bytes(buf[start:end]), where)
            if (vend - vstart) % dtype.itemsize:
                raise BlobFormatError(f"{where}: packed {role} field has a partial value")
            arrays[role] = (vstart, vend, dtype)
        elif number in _LEGACY_FIELDS and wire_type == VARINT:
            value, _ = read_varint(buf, vstart, vend)
            legacy[_LEGACY_FIELDS[number]] = as_signed64(value) & 0xFFFFFFFF
            if legacy[_LEGACY_FIELDS[number]] >= 1 << 31:
                legacy[_LEGACY_FIELDS[number]] -= 1 << 32
        elif number == 7 and wire_type == LENGTH_DELIMITED:
            shape_dims = []
            for dnum, dwire, _t, ds, de in iter_fields(buf, vstart, vend):
                if dnum != 1:
                    continue
                if dwire == LENGTH_DELIMITED:
                    shape_dims += [as_signed64(v) for v in read_packed_varints(buf, ds, de)]
                elif dwire == VARINT:
                    shape_dims.append(as_signed64(read_varint(buf, ds, de)[0]))
        elif wire_type in (VARINT, FIXED32, FIXED64, LENGTH_DELIMITED):
            continue  # an unknown field in a blob: nothing Caffe reads
    flat = {role: _view(buf, vs, ve, dtype, where) for role, (vs, ve, dtype) in arrays.items()}
    return _make_blob(shape_dims, legacy, flat, where)


def _make_blob(shape_dims, legacy, flat: dict, where) -> Blob:
    """Build a Blob from its shape fields and flat tensors {role: LazyTensor}."""
    legacy_shape = None
    if any(v is not None for v in legacy):
        legacy_shape = tuple(0 if v is None else v for v in legacy)
        shape = legacy_shape
    else:
        shape = tuple(shape_dims or ())
    if len(shape) > MAX_AXES:
        raise BlobFormatError(f"{where}: shape has {len(shape)} axes; Caffe allows {MAX_AXES}")
    if any(d < 0 for d in shape):
        raise BlobFormatError(f"{where}: shape {list(shape)} has a negative dimension")
    count = prod(shape)
    tensors = {}
    for role, tensor in flat.items():
        if tensor.size != count:
            raise BlobFormatError(
                f"{where}: shape {list(shape)} needs {count} {role} values, the file has {tensor.size}"
            )
        tensors[role] = _reshaped(tensor, shape)
    if "data" not in tensors:
        if count:
            raise BlobFormatError(f"{where}: shape {list(shape)} needs {count} values, the file has 0")
        tensors["data"] = LazyTensor(shape, F4, lambda: np.zeros(shape, F4), where)
    return Blob(tensors["data"], tensors.get("diff"), legacy_shape)


def _reshaped(tensor: LazyTensor, shape) -> LazyTensor:
    shape = tuple(shape)
    return LazyTensor(shape, tensor.dtype, lambda: tensor.numpy().reshape(shape), tensor.source,
                      tensor.file_bytes)


def _decode_with_protobuf(raw: bytes, where: str) -> Blob:
    try:
        message = pb.BlobProto.FromString(raw)
    except DecodeError as error:
        raise BlobFormatError(f"{where}: not a valid BlobProto ({error})") from error
    legacy = [getattr(message, n) if message.HasField(n) else None
              for n in ("num", "channels", "height", "width")]
    shape_dims = list(message.shape.dim) if message.HasField("shape") else None
    flat = {}
    for role, f4_name, f8_name in (("data", "data", "double_data"), ("diff", "diff", "double_diff")):
        values, dtype = getattr(message, f8_name), F8
        if not len(values):
            values, dtype = getattr(message, f4_name), F4
        if len(values):
            array = np.asarray(values, dtype=dtype)
            flat[role] = LazyTensor(array.shape, dtype, lambda a=array: a, where)
    return _make_blob(shape_dims, legacy, flat, where)


# -- encoding ---------------------------------------------------------------------
def _tensor_bytes(tensor):
    """The tensor's bytes to write: where they lie in an input file, a chunk
    that the writer copies file to file; else a view of its array."""
    if getattr(tensor, "file_bytes", None) is not None and tensor.size:
        return FileChunk(tensor)
    return _array_bytes(tensor.numpy())


def _array_bytes(array: np.ndarray) -> memoryview:
    array = np.ascontiguousarray(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    if array.size == 0:
        return memoryview(b"")  # a dim of 0: Caffe allows it; no values to write
    return memoryview(array).cast("B")


def encode_blob(blob: Blob, write_diff: bool = True) -> tuple[list, int]:
    """BlobProto payload of `blob` as (chunks, total length); chunks are bytes or views."""
    chunks: list = []
    shape_chunk = None
    if blob.legacy_shape is not None and _legacy_matches(blob):
        for number, value in zip((1, 2, 3, 4), blob.legacy_shape):
            chunks.append(encode_tag(number, VARINT) + encode_varint(value))
    else:
        # Caffe's Blob::ToProto only touches `shape` through add_dim, so a
        # 0-d blob is written without a shape field at all.
        dims = b"".join(encode_varint(d) for d in blob.shape)
        inner = length_delimited(1, len(dims)) + dims
        shape_chunk = (length_delimited(7, len(inner)) + inner) if blob.shape else None
    double = blob.data.dtype == F8
    data = _tensor_bytes(blob.data)
    diff = _tensor_bytes(blob.diff) if (write_diff and blob.diff is not None) else None
    if not double:
        if len(data):
            chunks += [length_delimited(5, len(data)), data]
        if diff is not None and len(diff):
            chunks += [length_delimited(6, len(diff)), diff]
    if shape_chunk is not None:
        chunks.append(shape_chunk)
    if double:
        if len(data):
            chunks += [length_delimited(8, len(data)), data]
        if diff is not None and len(diff):
            chunks += [length_delimited(9, len(diff)), diff]
    return chunks, sum(len(c) for c in chunks)


def _legacy_matches(blob: Blob) -> bool:
    legacy = blob.legacy_shape
    return prod(legacy) == prod(blob.shape) and tuple(
        d for d in legacy if d != 1) == tuple(d for d in blob.shape if d != 1)


def blob_to_bytes(blob: Blob, write_diff: bool = True) -> bytes:
    chunks, _ = encode_blob(blob, write_diff)
    return b"".join(bytes(c) for c in chunks)


__all__ = ["decode_blob", "encode_blob", "blob_to_bytes", "BlobFormatError", "WireError"]
