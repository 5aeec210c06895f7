"""Text NetParameter (.prototxt): the architecture, any version."""

from __future__ import annotations

import functools
import os
import warnings

from google.protobuf import text_format

from blobcast.errors import BlobcastWarning, FormatError
from blobcast.fileio import open_regular
from blobcast.limits import check_allocation
from blobcast.model import Model
from blobcast.schema import FORK_SETTINGS, LAYER_TYPE_FIELDS, MESSAGES
from blobcast.solvers import legacy_type_name

from . import caffe_pb2 as pb
from . import modular
from .blobproto import BlobFormatError, decode_blob
from .caffe_net import architecture_pb, model_from_net
from .messages import TEXT_NUMBER_BASE, fields_left_out, message_from_pb, pb_from_message
from .text_fields import attach, cut_unknown_fields, text_with_unknown
from .upgrade import UpgradeError, net_version, upgrade_net

NAME = "prototxt"
SUFFIXES = (".prototxt", ".pbtxt")
DESCRIPTION = "a Caffe net definition (text NetParameter)"
HOLDS = frozenset({"architecture"})


_TYPE_FIELD_NUMBER_BASE = 100_000  # where the text-only twin puts fork fields


@functools.cache
def _twin_net_class(message_name: str = "NetParameter"):
    """NetParameter's twin for text: its LayerParameter also declares the fork
    settings (prior_box_param, interp_param, ...) at numbers no fork uses, so
    that they parse and print by name; messages.message_from_pb takes them
    back by those numbers."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    proto = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(proto)
    proto.name = "blobcast_text_twin.proto"
    layer = next(m for m in proto.message_type if m.name == "LayerParameter")
    numbers = {field.name: field.number for field in layer.field}
    for fields in LAYER_TYPE_FIELDS.values():
        for name, (carrier, type_name) in fields.items():
            layer.field.add(name=name, number=_TYPE_FIELD_NUMBER_BASE + numbers[carrier],
                            label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
                            type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
                            type_name=f".caffe.{type_name}")
    for name in FORK_SETTINGS:
        number, _kind, _repeated, _default, type_name = MESSAGES["LayerParameter"][name]
        layer.field.add(name=name, number=TEXT_NUMBER_BASE + number,
                        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
                        type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
                        type_name=f".caffe.{type_name}")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe.{message_name}"))


def _twin_layers(net):
    for position, layer in enumerate(net.layer):
        for name, (carrier, _) in LAYER_TYPE_FIELDS.get(layer.type, {}).items():
            yield position, layer, name, carrier


def _from_twin(twin) -> pb.NetParameter:
    """The twin's fork fields moved under the Caffe field's number."""
    moved = []
    for position, layer, name, carrier in _twin_layers(twin):
        if layer.HasField(name):
            moved.append((position, carrier, getattr(layer, name).SerializeToString()))
            layer.ClearField(name)
    net = pb.NetParameter.FromString(twin.SerializeToString())
    for position, carrier, raw in moved:
        getattr(net.layer[position], carrier).MergeFromString(raw)
    return net


def _to_twin(net: pb.NetParameter):
    twin = _twin_net_class().FromString(net.SerializeToString())
    for _, layer, name, carrier in _twin_layers(twin):
        if layer.HasField(carrier):
            raw = getattr(layer, carrier).SerializeToString()
            layer.ClearField(carrier)
            getattr(layer, name).MergeFromString(raw)
            getattr(layer, name).SetInParent()
    return twin


_TWIN_NAMES = (*FORK_SETTINGS, *(name for fields in LAYER_TYPE_FIELDS.values() for name in fields))


def parse_text(text: str, path: str, message_class=pb.NetParameter):
    """Parse a text message; fields the schema does not know are kept as text
    (text_fields.py), at any depth."""
    # A solver's inline net_param has layers too: its twin has the same fields.
    twin = message_class in (pb.NetParameter, pb.SolverParameter) and any(
        name in text for name in _TWIN_NAMES)
    message = _twin_net_class(message_class.DESCRIPTOR.name)() if twin else message_class()
    text, kept = cut_unknown_fields(text, message_class.DESCRIPTOR.name, path)
    try:
        text_format.Parse(text, message, allow_unknown_field=False)
    except text_format.ParseError as error:
        line, column = error.GetLine(), error.GetColumn()
        detail = str(error)
        if line is not None and detail.startswith(f"{line}:"):
            detail = detail.split(" : ", 1)[-1] if " : " in detail else detail
        where = f"line {line}, column {column}: " if line is not None else ""
        raise FormatError(f"syntax error at {where}{detail}", path) from error
    attach(message, kept)
    if twin and message_class is pb.SolverParameter:
        return message_class.FromString(message.SerializeToString())
    return _from_twin(message) if twin else message


def _blobs_of(messages, where: str):
    out = []
    for i, layer in enumerate(messages):
        blobs = []
        for j, blob in enumerate(layer.blobs):
            raw = blob.SerializeToString()
            blobs.append(decode_blob(raw, 0, len(raw), f"{where} {i}, blob {j}"))
        layer.ClearField("blobs")
        out.append(blobs)
    return out


def net_from_text(text: str, path: str) -> Model:
    net = parse_text(text, path)
    version = net_version(net)
    notes: list[str] = []
    try:
        v1_blobs = _blobs_of(net.layers, "V1 layer")
        v2_blobs = _blobs_of(net.layer, "layer")
        blobs = upgrade_net(net, v1_blobs, v2_blobs, notes)
    except (UpgradeError, BlobFormatError) as error:
        raise FormatError(str(error), path) from error
    model = model_from_net(net, blobs, source_format=NAME, source_version=version,
                           notes=notes, path=path)
    return model


def read_text(path: str) -> str:
    """A text file's contents: a regular file only, its size within the budget."""
    with open_regular(path) as handle:
        check_allocation(os.fstat(handle.fileno()).st_size, "the text", path)
        return handle.read().decode("utf-8")


def read(path: str, **_options) -> Model:
    try:
        text = read_text(path)
    except UnicodeDecodeError as error:
        raise FormatError("not a text file (a binary model with the wrong suffix?)", path) from error
    if not text.strip():
        raise FormatError("the file is empty", path)
    top = modular.modular_entries(text)
    if top is not None:  # modules, instances, imports: flattened here
        return flatten_modular(text, path, _read_import, top)
    return net_from_text(text, path)


def _read_import(name: str) -> str:
    try:
        return read_text(name)
    except (OSError, UnicodeDecodeError) as error:
        raise FormatError(f"cannot be read ({error})", name) from error


def flatten_modular(text: str, path: str, read_import=_read_import, top=None) -> Model:
    """The plain net of a modular net file's text (modular.py); `top`: its
    top-level fields, when already scanned."""
    return modular.flatten(modular.parse_file(path, text, read_import, top), parse_text,
                           model_from_net, upgrade_net)


def has_unknown_fields(model: Model) -> bool:
    def walk(message) -> bool:
        if message.unknown_fields:
            return True
        for name in message.present_fields():
            value = getattr(message, name)
            items = value if isinstance(value, list) else [value]
            if any(hasattr(v, "unknown_fields") and walk(v) for v in items):
                return True
        return False

    return walk(model.net) or any(walk(layer.spec) for layer in model.layers)


def architecture_text(model: Model) -> str:
    net = architecture_pb(model, fork_settings="text")
    if any(layer.HasField(carrier) for _, layer, _, carrier in _twin_layers(net)) or any(
            layer.spec.has(name) for layer in model.layers for name in FORK_SETTINGS):
        return text_with_unknown(_to_twin(net))
    return text_with_unknown(net)


def write(model: Model, path: str, **_options) -> None:
    if not model.has_architecture:
        raise FormatError("the model has no layer definitions to write as a prototxt", path)
    left_out = fields_left_out(model, "text")
    if left_out:
        warnings.warn(f"{path}: text cannot hold fields known only by number; {left_out}",
                      BlobcastWarning, stacklevel=2)
    text = architecture_text(model)  # all of it before the file is opened: no half-written file
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def read_solver(path: str):
    """A solver .prototxt as a SolverParameter Message, legacy solver_type upgraded."""
    try:
        text = read_text(path)
    except (OSError, UnicodeDecodeError) as error:
        raise FormatError(f"cannot be read ({error})", path) from error
    solver = parse_text(text, path, pb.SolverParameter)
    if solver.HasField("solver_type"):
        if solver.HasField("type"):
            raise FormatError("sets both solver_type and type; Caffe refuses that", path)
        solver.type = legacy_type_name(solver.solver_type)
        solver.ClearField("solver_type")
    return message_from_pb(solver)


def _confined(base: str, name: str) -> str | None:
    """`name` joined to folder `base` when it stays inside it (links resolved)."""
    folder = os.path.realpath(base)
    target = os.path.realpath(os.path.join(folder, name))
    return target if os.path.commonpath([folder, target]) == folder else None


def net_of_solver(solver, path: str) -> tuple[Model | None, str | None]:
    """The training net a solver names (inline, or a file relative to where Caffe
    ran or to the solver file), and a note when the name was not followed.

    The name comes from the file: like a state's learned_net, an absolute
    path or one with '..' parts is not followed (the solver may not lead
    blobcast to any file of the machine), nor a link out of the folder."""
    for inline in ("train_net_param", "net_param"):
        if solver.has(inline):
            net = pb_from_message(pb.NetParameter, getattr(solver, inline))
            notes: list[str] = []
            blobs = upgrade_net(net, [[] for _ in net.layers], [[] for _ in net.layer], notes)
            return model_from_net(net, blobs, source_format=NAME, source_version="V2",
                                  notes=notes, path=path), None
    for field in ("train_net", "net"):
        if solver.has(field):
            name = getattr(solver, field)
            if os.path.isabs(name) or ".." in name.replace("\\", "/").split("/"):
                return None, (f"the solver's {field} {name!r} is not followed (an absolute path "
                              "or one with '..'; only a net beside the solver is read)")
            for base in (os.getcwd(), os.path.dirname(os.path.abspath(path))):
                candidate = _confined(base, name)
                if candidate is None and os.path.lexists(os.path.join(base, name)):
                    return None, (f"the solver's {field} {name!r} is not followed (a link "
                                  "out of its folder)")
                if candidate is not None and os.path.isfile(candidate):
                    return read(candidate), None
            raise FormatError(f"the solver's {field} {name!r} was not found (tried it as "
                              "given and beside the solver file)", path)
    return None, None
