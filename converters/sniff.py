"""What a file is by its bytes, for names that do not say it.

Caffe wrote weights as `lenet_iter_10000` before 2015; people name files
`.bin`, `.model`, `.weights`, `.pb`. The formats blobcast reads tell
themselves apart by content: HDF5 and NumPy by their magic; text by being
UTF-8 whose first field name is followed by `:`, `{` or `<`; the protobuf
ones by which top-level fields they hold (numbers and wire types), scanned
without decoding anything:

    Caffe net       layer = 100 (V2), or layers = 2 (V1; V0 when a layers
                    entry holds an old `layer` = 1 message)
    ONNX model      ir_version = 1 (varint) and graph = 7 (message)
    solver state    iter = 1 (varint); only iter, learned_net = 2,
                    history = 3, current_step = 4 (varint)
    BlobProto       num..width = 1..4 (varint), data/diff = 5/6,
                    shape = 7 (message), double data = 8/9: nothing else
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from blobcast.errors import FormatError
from blobcast.fileio import open_regular

from .hdf5_container import HDF5_MAGIC
from .mapping import map_file
from .wire import FIXED32, FIXED64, LENGTH_DELIMITED, VARINT, WireError, iter_fields

NPY_MAGIC = b"\x93NUMPY"
_TEXT_HEAD = 4096
_MOST_FIELDS = 100_000  # a net's layers; beyond this the scan stops and judges what it saw
_TEXT_START = re.compile(r"(?:\s|#[^\n]*\n?)*[A-Za-z_][\w]*\s*[:{<]")


@dataclass(frozen=True)
class Sniffed:
    """A format name and what the content is, in words ("a Caffe binary net (V1)")."""

    format: str
    what: str


def _text(head: bytes) -> bool:
    if b"\0" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 3:  # not merely a character cut at the end of the head
            return False
        text = head[:error.start].decode("utf-8")
    return _TEXT_START.match(text.lstrip("\ufeff")) is not None


def _top_fields(buf) -> dict[int, set[int]] | None:
    """{field number: wire types} of the message's top level; None if the
    bytes are not one protobuf message."""
    fields: dict[int, set[int]] = {}
    try:
        for count, (number, wire_type, *_rest) in enumerate(iter_fields(buf, 0, len(buf))):
            fields.setdefault(number, set()).add(wire_type)
            if count >= _MOST_FIELDS:
                break
    except WireError:
        return None
    return fields


def _first_payload(buf, wanted: int):
    for number, wire_type, _tag, start, end in iter_fields(buf, 0, len(buf)):
        if number == wanted and wire_type == LENGTH_DELIMITED:
            return buf[start:end]
    return None


def _net_version(buf, fields) -> str:
    if LENGTH_DELIMITED in fields.get(100, ()):
        return "V2"
    entry = _first_payload(buf, 2)
    try:
        inner = _top_fields(entry) if entry is not None else None
    except WireError:
        inner = None
    return "V0" if inner and LENGTH_DELIMITED in inner.get(1, ()) else "V1"


def _only(fields, allowed: dict[int, set[int]]) -> bool:
    return all(number in allowed and types <= allowed[number] for number, types in fields.items())


_STATE_FIELDS = {1: {VARINT}, 2: {LENGTH_DELIMITED}, 3: {LENGTH_DELIMITED}, 4: {VARINT}}
_BLOB_FIELDS = {1: {VARINT}, 2: {VARINT}, 3: {VARINT}, 4: {VARINT},
                5: {LENGTH_DELIMITED, FIXED32}, 6: {LENGTH_DELIMITED, FIXED32},
                7: {LENGTH_DELIMITED}, 8: {LENGTH_DELIMITED, FIXED64}, 9: {LENGTH_DELIMITED, FIXED64}}


def _protobuf(buf) -> Sniffed | None:
    fields = _top_fields(buf)
    if not fields:
        return None
    if VARINT in fields.get(1, ()) and LENGTH_DELIMITED in fields.get(7, ()):
        return Sniffed("onnx", "an ONNX model")
    if LENGTH_DELIMITED in fields.get(100, ()) or (
            LENGTH_DELIMITED in fields.get(2, ()) and VARINT not in fields.get(1, ())
            and not _only(fields, _BLOB_FIELDS)):
        return Sniffed("caffemodel", f"a Caffe binary net ({_net_version(buf, fields)})")
    if VARINT in fields.get(1, ()) and _only(fields, _STATE_FIELDS):
        return Sniffed("solverstate", "a Caffe solver state")
    if _only(fields, _BLOB_FIELDS) and fields.keys() & {5, 7, 8}:
        return Sniffed("binaryproto", "a Caffe BlobProto (binaryproto)")
    return None


def _hdf5(path: str) -> Sniffed:
    from .hdf5_guard import child, open_hdf5

    unknown = Sniffed("hdf5", "an HDF5 file")
    try:
        handle = open_hdf5(path)
    except FormatError:  # its reader says what is wrong with it
        return unknown
    try:
        if child(handle, "history", path) is not None:
            return Sniffed("solverstate-h5", "a Caffe HDF5 solver state")
        if child(handle, "data", path) is not None:
            return Sniffed("caffemodel-h5", "a Caffe HDF5 snapshot")
        return unknown
    except Exception:  # a damaged file: h5py raises many types; its reader says what is wrong
        return unknown
    finally:
        handle.close()


def sniff(path: str) -> Sniffed | None:
    """What the file's bytes say it is, or None when they say nothing known."""
    with open_regular(path) as handle:
        head = handle.read(_TEXT_HEAD)
    if not head:
        raise FormatError("the file is empty", path)
    if head.startswith(HDF5_MAGIC):
        return _hdf5(path)
    if head.startswith(NPY_MAGIC):
        return Sniffed("npy", "a NumPy array (.npy)")
    if _text(head):
        return Sniffed("prototxt", "a text Caffe definition (prototxt)")
    return _protobuf(map_file(path))
