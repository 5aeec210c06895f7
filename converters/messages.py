"""Conversion between protobuf messages and blobcast's protobuf-free Messages."""

from __future__ import annotations

from google.protobuf.unknown_fields import UnknownFieldSet

from blobcast.params import Message
from blobcast.schema import ENUMS


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
    return message


def fill_pb(pb, message: Message) -> None:
    """Set the fields of protobuf message `pb` from `message`."""
    for name in message.present_fields():
        number, kind, repeated, default, type_name = message.field_spec(name)
        value = getattr(message, name)
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
