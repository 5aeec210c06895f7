"""Binary .caffemodel (a serialized NetParameter), any version, read and written.

Reading memory-maps the file and scans the wire format for the blobs, so
tensors are views of the file; protobuf parses only the small layer
messages. Writing streams each blob's bytes straight from its array.
"""

from __future__ import annotations

import warnings

from google.protobuf.message import DecodeError

from blobcast.errors import BlobcastWarning, FormatError
from blobcast.limits import check_allocation, human_size
from blobcast.model import Model

from . import caffe_pb2 as pb
from .blobproto import BlobFormatError, decode_blob, encode_blob
from .caffe_net import layer_pb, model_from_net, net_settings_pb, written_layers
from .mapping import map_file
from .messages import fields_left_out, fork_setting_numbers
from .upgrade import UpgradeError, net_version, upgrade_net
from .wire import WireError, iter_fields, length_delimited, splice_at_field, write_chunks

NAME = "caffemodel"
SUFFIXES = (".caffemodel",)
DESCRIPTION = "a Caffe binary model (NetParameter protobuf)"
HOLDS = frozenset({"architecture", "weights", "diffs"})
PROTOBUF_LIMIT = 2**31 - 1  # Caffe's reader refuses messages above INT_MAX bytes

_LAYER_V2, _LAYERS_V1 = 100, 2
_BLOBS_V2, _BLOBS_V1, _V0_LAYER, _BLOBS_V0 = 7, 6, 1, 50


def _strip_blobs(buf, start, end, blob_field, where, nested=None):
    """Return (layer bytes without blob fields, blobs) for one layer message."""
    kept = bytearray()
    blobs = []
    for number, wire_type, tag_start, vstart, vend in iter_fields(buf, start, end):
        if number == blob_field and wire_type == 2:
            blobs.append(decode_blob(buf, vstart, vend, f"{where}, blob {len(blobs)}"))
        elif nested and number == nested[0] and wire_type == 2:
            inner, inner_blobs = _strip_blobs(buf, vstart, vend, nested[1], where)
            kept += length_delimited(number, len(inner)) + inner
            blobs = inner_blobs or blobs
        else:
            kept += buf[tag_start:vend]
    return bytes(kept), blobs


SETTINGS_COPIES = 6  # a binary model's settings (blobs aside) are held about six times while read (measured)


def _settings_size(buf, start, end, blob_field, nested=None) -> int:
    """The bytes of a layer message other than its blobs, counted without copying."""
    size = 0
    for number, wire_type, tag_start, vstart, vend in iter_fields(buf, start, end):
        if number == blob_field and wire_type == 2:
            continue
        if nested and number == nested[0] and wire_type == 2:
            size += vstart - tag_start + _settings_size(buf, vstart, vend, nested[1])
        else:
            size += vend - tag_start
    return size


def _check_settings_size(buf, path: str) -> None:
    """Settings count against the memory budget before any is copied, as a
    text file's bytes do: a 190 MB unknown field was held six times over.
    Every copy decode_net makes is smaller than this, so it checks no more."""
    size = 0
    for number, wire_type, tag_start, vstart, vend in iter_fields(buf, 0, len(buf)):
        if number == _LAYER_V2 and wire_type == 2:
            size += vstart - tag_start + _settings_size(buf, vstart, vend, _BLOBS_V2)
        elif number == _LAYERS_V1 and wire_type == 2:
            size += vstart - tag_start + _settings_size(buf, vstart, vend, _BLOBS_V1, (_V0_LAYER, _BLOBS_V0))
        else:
            size += vend - tag_start
    check_allocation(size * SETTINGS_COPIES, f"reading the model's settings ({human_size(size)} besides "
                     "its blobs)", path)


def decode_net(buf, path: str):
    """Parse a NetParameter held in `buf`; return (net pb, v1 blobs, v2 blobs)."""
    _check_settings_size(buf, path)
    stripped = bytearray()
    v1_blobs, v2_blobs = [], []
    end = len(buf)
    for number, wire_type, tag_start, vstart, vend in iter_fields(buf, 0, end):
        if number == _LAYER_V2 and wire_type == 2:
            where = f"layer {len(v2_blobs)}"
            layer_bytes, blobs = _strip_blobs(buf, vstart, vend, _BLOBS_V2, where)
            v2_blobs.append(blobs)
        elif number == _LAYERS_V1 and wire_type == 2:
            where = f"V1 layer {len(v1_blobs)}"
            layer_bytes, blobs = _strip_blobs(buf, vstart, vend, _BLOBS_V1, where,
                                              nested=(_V0_LAYER, _BLOBS_V0))
            v1_blobs.append(blobs)
        else:
            stripped += buf[tag_start:vend]
            continue
        stripped += length_delimited(number, len(layer_bytes)) + layer_bytes
    net = pb.NetParameter.FromString(bytes(stripped))
    return net, v1_blobs, v2_blobs


def _name_blob_sources(net, blobs_per_layer):
    for layer, blobs in zip(net.layer, blobs_per_layer):
        for i, blob in enumerate(blobs):
            for tensor in (blob.data, blob.diff):
                if tensor is not None:
                    tensor.source = f"layer {layer.name!r} blob {i}"


def _looks_like_solver_state(buf) -> bool:
    try:
        state = pb.SolverState.FromString(bytes(buf))
    except DecodeError:
        return False
    return state.HasField("iter") and state.HasField("learned_net")


def read(path: str, **_options) -> Model:
    buf = map_file(path)
    try:
        net, v1_blobs, v2_blobs = decode_net(buf, path)
    except (WireError, DecodeError) as error:
        if _looks_like_solver_state(buf):
            raise FormatError("this is a Caffe solver state, not a model; name it .solverstate "
                              "(or pass --from solverstate)", path) from error
        raise FormatError(f"not a valid Caffe binary model ({error})", path) from error
    except BlobFormatError as error:
        raise FormatError(str(error), path) from error
    if not len(net.layer) and not len(net.layers):
        if _looks_like_solver_state(buf):
            raise FormatError("this is a Caffe solver state, not a model; name it .solverstate "
                              "(or pass --from solverstate)", path)
        raise FormatError(
            "the file parses but holds no layers; it is not a Caffe model "
            "(a .solverstate or .binaryproto, perhaps?)", path)
    version = net_version(net)
    notes: list[str] = []
    try:
        blobs = upgrade_net(net, v1_blobs, v2_blobs, notes)
    except UpgradeError as error:
        raise FormatError(f"cannot upgrade this {version} net: {error}", path) from error
    _name_blob_sources(net, blobs)
    model = model_from_net(net, blobs, source_format=NAME, source_version=version,
                           notes=notes, path=path)
    if all(not layer.type and not layer.bottoms and not layer.tops for layer in model.layers):
        # Names and blobs only, as Caffe's CopyTrainedLayersFrom reads them.
        model.has_architecture = False
    return model


def layer_settings_bytes(layer) -> bytes:
    """A layer's LayerParameter without blobs, as this format writes it: every
    field in number order, as the protobuf of the fork that wrote it does (fork
    settings and unknown fields at the numbers where they were found)."""
    settings = layer_pb(layer, with_unknown=False, fork_settings="skip").SerializeToString()
    unknown = layer.spec.unknown_fields
    spliced = [(number, [length_delimited(number, len(payload)), payload])
               for number, payload in fork_setting_numbers(layer.spec)]
    spliced += [(number, [unknown[tag_start:end]])
                for number, _wire, tag_start, _start, end in iter_fields(unknown, 0, len(unknown))]
    for number, chunks in sorted(spliced, key=lambda item: item[0]):
        settings = b"".join(splice_at_field(settings, number, chunks))
    return settings


def _layer_chunks(layer, write_diff: bool):
    """Chunks of one LayerParameter payload with its blobs spliced in at field 7."""
    blob_chunks = []
    for blob in layer.blobs:
        chunks, length = encode_blob(blob, write_diff)
        blob_chunks += [length_delimited(_BLOBS_V2, length), *chunks]
    return splice_at_field(layer_settings_bytes(layer), _BLOBS_V2, blob_chunks)


def net_chunks(model: Model, write_diff: bool = True) -> list:
    """All chunks of the binary NetParameter for `model` (V2 form)."""
    head = net_settings_pb(model, with_unknown=False).SerializeToString()
    chunks = [head]
    for layer in written_layers(model):
        layer_chunks = _layer_chunks(layer, write_diff)
        chunks.append(length_delimited(_LAYER_V2, sum(len(c) for c in layer_chunks)))
        chunks += layer_chunks
    chunks.append(model.net.unknown_fields)
    return chunks


def write(model: Model, path: str, *, progress=None, **_options) -> None:
    if not model.has_architecture:
        # Weights only: layer names and blobs, which is all Caffe's
        # CopyTrainedLayersFrom (and OpenCV's importer) read from weights.
        absent = [layer.name for layer in model.layers if None in layer.blobs]
        if absent:
            raise FormatError(
                f"layer {absent[0]!r} lacks a blob that the file keeps under the owner of a shared "
                "parameter; give --prototxt so the sharing can be resolved", path)
    left_out = fields_left_out(model, "binary")
    if left_out:
        warnings.warn(f"{path}: a binary file cannot hold fields known only by name; {left_out}",
                      BlobcastWarning, stacklevel=2)
    chunks = net_chunks(model, write_diff=True)
    total = sum(len(c) for c in chunks)
    if total > PROTOBUF_LIMIT:
        raise FormatError(
            f"the model needs {total / 2**30:.2f} GiB as a .caffemodel, over the 2 GiB that "
            "Caffe's protobuf reader accepts; write .caffemodel.h5 instead", path)
    write_chunks(path, chunks, progress)
