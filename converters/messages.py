"""Conversion between protobuf messages and blobcast's protobuf-free Messages."""

from __future__ import annotations

from google.protobuf.unknown_fields import UnknownFieldSet

from blobcast.params import Message
from blobcast.schema import ENUMS, LAYER_TYPE_FIELDS

from . import caffe_pb2


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


def fill_pb(pb, message: Message) -> None:
    """Set the fields of protobuf message `pb` from `message`."""
    carried = {name: carrier for fields in LAYER_TYPE_FIELDS.values()
               for name, (carrier, _) in fields.items()} if pb.DESCRIPTOR.name == "LayerParameter" else {}
    for name in message.present_fields():
        number, kind, repeated, default, type_name = message.field_spec(name)
        value = getattr(message, name)
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


def pb_from_message(pb_class, message: Message):
    pb = pb_class()
    fill_pb(pb, message)
    return pb
