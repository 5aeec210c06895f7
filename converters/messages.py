"""Conversion between protobuf messages and blobcast's protobuf-free Messages."""

from __future__ import annotations

from google.protobuf.unknown_fields import UnknownFieldSet

from blobcast.errors import FormatError
from blobcast.params import Message
from blobcast.schema import ENUMS, LAYER_TYPE_FIELDS

from . import caffe_pb2
from .wire import WireError, iter_fields

# Where forks put a layer type's settings at another LayerParameter number
# than this schema does: (number, settings field, message), tried when the
# settings field itself is absent. A candidate is taken only if its bytes
# decode as that message with no field out of place (numbers and wire types).
FORK_FIELD_NUMBERS = {
    "Normalize": [(149, "norm_param", "NormalizeParameter")],               # OpenCV's caffe.proto
    "Permute": [(148, "permute_param", "PermuteParameter")],                # OpenCV
    "DetectionOutput": [(147, "detection_output_param", "DetectionOutputParameter")],  # OpenCV
    "PriorBox": [(150, "prior_box_param", "PriorBoxParameter")],            # OpenCV
    "Upsample": [(137, "upsample_param", "UpsampleParameter"),              # SegNet
                 (150, "upsample_param", "UpsampleParameter"),              # HiSilicon's darknet port
                 (160, "upsample_param", "AtcUpsampleParameter")],          # Huawei ATC
    "ShuffleChannel": [(159, "shuffle_channel_param", "ShuffleChannelParameter")],  # Huawei ATC
    "Interp": [(166, "interp_param", "InterpParameter")],                   # merged fork protos
    "PSROIPooling": [(10002, "psroi_pooling_param", "PSROIPoolingParameter")],  # OpenCV
    "BN": [(45, "bn_param", "SegNetBNParameter")],                          # SegNet, ENet
}


def _unknown_bytes(pb) -> bytes:
    if not len(UnknownFieldSet(pb)):
        return b""
    # Serializing a copy with every known field cleared leaves exactly the
    # unknown fields' wire bytes.
    bare = type(pb)()
    bare.CopyFrom(pb)
    for descriptor, _ in bare.ListFields():
        bare.ClearField(descriptor.name)
    return bare.SerializeToString()


def message_from_pb(pb) -> Message:
    """A Message holding exactly the fields present in `pb` (and its unknown bytes)."""
    message = Message(pb.DESCRIPTOR.name)
    for descriptor, value in pb.ListFields():
        name = descriptor.name
        if descriptor.message_type is not None:
            if descriptor.is_repeated:
                setattr(message, name, [message_from_pb(v) for v in value])
            else:
                setattr(message, name, message_from_pb(value))
        elif descriptor.enum_type is not None:
            by_number = descriptor.enum_type.values_by_number
            if descriptor.is_repeated:
                setattr(message, name, [by_number[v].name for v in value])
            else:
                setattr(message, name, by_number[value].name)
        else:
            setattr(message, name, list(value) if descriptor.is_repeated else value)
    unknown = _unknown_bytes(pb)
    if unknown:
        object.__setattr__(message, "unknown_fields", unknown)
    if pb.DESCRIPTOR.name == "LayerParameter":
        _resolve_type_fields(pb, message)
    return message


def _resolve_type_fields(pb, message: Message) -> None:
    """A fork field sharing a Caffe field's number (an Interp layer's 143)
    arrives in that Caffe field, its values as unknown fields there: decode
    them with the fork's message instead."""
    for name, (carrier, type_name) in LAYER_TYPE_FIELDS.get(pb.type, {}).items():
        if pb.HasField(carrier):
            raw = getattr(pb, carrier).SerializeToString()
            setattr(message, name, message_from_pb(getattr(caffe_pb2, type_name).FromString(raw)))
            message.clear(carrier)
    _resolve_fork_numbers(pb, message)


def _field_bytes(pb, message: Message, number: int):
    """The payloads of LayerParameter field `number` (a known field's message
    or unknown length-delimited fields), and how to remove them."""
    known = pb.DESCRIPTOR.fields_by_number.get(number)
    if known is not None:
        if known.message_type is None or known.is_repeated or not pb.HasField(known.name):
            return None, None
        return getattr(pb, known.name).SerializeToString(), lambda: message.clear(known.name)
    raw = message.unknown_fields
    payloads, kept = [], bytearray()
    try:
        for field, wire_type, tag_start, start, end in iter_fields(raw, 0, len(raw)):
            if field == number and wire_type == 2:
                payloads.append(bytes(raw[start:end]))
            else:
                kept += raw[tag_start:end]
    except WireError:
        return None, None
    if not payloads:
        return None, None
    return b"".join(payloads), lambda: object.__setattr__(message, "unknown_fields", bytes(kept))


def _resolve_fork_numbers(pb, message: Message) -> None:
    for number, name, type_name in FORK_FIELD_NUMBERS.get(pb.type, ()):
        if message.has(name):
            return
        raw, remove = _field_bytes(pb, message, number)
        if raw is None:
            continue
        try:
            settings = getattr(caffe_pb2, type_name).FromString(raw)
        except Exception:  # protobuf raises several types on garbage
            continue
        if _unknown_bytes(settings):
            continue
        remove()
        value = message_from_pb(settings)
        object.__setattr__(value, "wire_number", number)
        setattr(message, name, value)
        return


def fork_numbered_fields(message: Message):
    """(number, payload) of each LayerParameter setting read from a fork's
    field number, for a binary writer to splice in where it was."""
    for name in message.present_fields():
        value = getattr(message, name)
        if isinstance(value, Message) and value.wire_number is not None:
            yield value.wire_number, pb_from_message(getattr(caffe_pb2, value.type_name),
                                                     value).SerializeToString()


def fill_pb(pb, message: Message, skip_fork_numbered: bool = False) -> None:
    """Set the fields of protobuf message `pb` from `message`. Settings read
    from a fork's field number go to this schema's field (text has names, not
    numbers), or are left out for the binary writer (`skip_fork_numbered`)."""
    carried = {name: carrier for fields in LAYER_TYPE_FIELDS.values()
               for name, (carrier, _) in fields.items()} if pb.DESCRIPTOR.name == "LayerParameter" else {}
    for name in message.present_fields():
        number, kind, repeated, default, type_name = message.field_spec(name)
        value = getattr(message, name)
        if skip_fork_numbered and isinstance(value, Message) and value.wire_number is not None:
            continue
        if name in carried:  # written under the Caffe field's number, as the fork does
            raw = pb_from_message(getattr(caffe_pb2, type_name), value).SerializeToString()
            getattr(pb, carried[name]).MergeFromString(raw)
            getattr(pb, carried[name]).SetInParent()
            continue
        if kind == "message":
            if repeated:
                target = getattr(pb, name)
                for item in value:
                    fill_pb(target.add(), item)
            else:
                if value.type_name != type_name:  # a fork's own layout, written by name
                    value = BY_NAME[value.type_name](value)
                fill_pb(getattr(pb, name), value)
                getattr(pb, name).SetInParent()
        elif kind == "enum":
            numbers = ENUMS[type_name]
            if repeated:
                getattr(pb, name).extend(numbers[v] for v in value)
            else:
                setattr(pb, name, numbers[value])
        elif repeated:
            getattr(pb, name).extend(value)
        else:
            setattr(pb, name, value)
    if message.unknown_fields:
        pb.MergeFromString(message.unknown_fields)


def _atc_upsample_by_name(atc: Message) -> Message:
    """Huawei ATC's binary Upsample settings as its prototxt spells them."""
    named = Message("UpsampleParameter")
    if atc.has("scale"):
        if atc.scale < 0 or atc.scale != int(atc.scale):
            raise FormatError(f"Huawei ATC Upsample scale {atc.scale:g} is not a whole number, "
                              "which its text form cannot hold: write a .caffemodel")
        named.scale = int(atc.scale)
    for name in ("stride", "stride_h", "stride_w"):
        if atc.has(name):
            if getattr(atc, name) < 0:
                raise FormatError(f"Huawei ATC Upsample {name} {getattr(atc, name)} is negative")
            setattr(named, name, getattr(atc, name))
    if not any(named.has(name) for name in ("stride", "stride_h", "stride_w")):
        named.stride_h, named.stride_w = 2, 2  # ATC's defaults, spelled out to keep the meaning
    return named


# Fork layouts (params.FORK_LAYOUTS) to this schema's message of the same names.
BY_NAME = {"AtcUpsampleParameter": _atc_upsample_by_name}


def pb_from_message(pb_class, message: Message):
    pb = pb_class()
    fill_pb(pb, message)
    return pb
