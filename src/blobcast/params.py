"""Typed Caffe parameter messages without protobuf.

`Message("ConvolutionParameter")` behaves like the protobuf message of that
name: unset fields read as Caffe's defaults, set fields are remembered (so a
file is written back exactly as it was read), values are type-checked, enums
are their names ("MAX", "AVE"). The field table comes from `schema.py`, which
is generated from proto/caffe.proto.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .schema import ENUMS, MESSAGES

_INT_RANGES = {
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
}


def _check_int(kind: str, value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if not hasattr(value, "__index__"):
            raise TypeError(f"{where}: expected an integer, got {value!r}")
        value = value.__index__()
    low, high = _INT_RANGES[kind]
    if not low <= value <= high:
        raise ValueError(f"{where}: {value} is out of range for {kind}")
    return int(value)


def _check_float(value: Any, where: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{where}: expected a number, got {value!r}") from None


def _check_bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{where}: expected true or false, got {value!r}")
    return value


def _check_string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{where}: expected a string, got {value!r}")
    return value


def _check_enum(type_name: str, value: Any, where: str) -> str:
    names = ENUMS[type_name]
    if isinstance(value, str):
        if value not in names:
            raise ValueError(f"{where}: {value!r} is not one of {', '.join(names)}")
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        for name, number in names.items():
            if number == value:
                return name
        raise ValueError(f"{where}: {value} is not a value of {type_name}")
    raise TypeError(f"{where}: expected one of {', '.join(names)}, got {value!r}")


_SCALAR_CHECKS = {
    "float": lambda type_name, value, where: _check_float(value, where),
    "double": lambda type_name, value, where: _check_float(value, where),
    "bool": lambda type_name, value, where: _check_bool(value, where),
    "string": lambda type_name, value, where: _check_string(value, where),
    "bytes": lambda type_name, value, where: bytes(value),
    "enum": _check_enum,
}


def _check_scalar(kind: str, type_name: str | None, value: Any, where: str) -> Any:
    if kind in _INT_RANGES:
        return _check_int(kind, value, where)
    check = _SCALAR_CHECKS.get(kind)
    if check is None:
        raise TypeError(f"{where}: unsupported field kind {kind}")
    return check(type_name, value, where)


def _short_float32(value: float) -> float:
    return float(str(np.float32(value)))


class RepeatedField(list):
    """A list that type-checks what goes into it."""

    __slots__ = ("_kind", "_type_name", "_where")

    def __init__(self, kind: str, type_name: str | None, where: str, values=()):
        super().__init__()
        self._kind, self._type_name, self._where = kind, type_name, where
        self.extend(values)

    def _coerce(self, value):
        if self._kind == "message":
            if isinstance(value, dict):
                return Message(self._type_name, **value)
            if not isinstance(value, Message) or value.type_name != self._type_name:
                raise TypeError(f"{self._where}: expected a {self._type_name}, got {value!r}")
            return value
        return _check_scalar(self._kind, self._type_name, value, self._where)

    def append(self, value):
        super().append(self._coerce(value))

    def extend(self, values):
        super().extend(self._coerce(v) for v in values)

    def insert(self, index, value):
        super().insert(index, self._coerce(value))

    def __setitem__(self, index, value):
        if isinstance(index, slice):
            super().__setitem__(index, [self._coerce(v) for v in value])
        else:
            super().__setitem__(index, self._coerce(value))

    def add(self, **fields) -> Message:
        """Append a new message (for repeated message fields) and return it."""
        message = Message(self._type_name, **fields)
        super().append(message)
        return message


# A fork whose settings have the same names but other numbers and types
# (Huawei ATC's float `scale` at 1) keeps them in its own message, so that its
# binary round trip is exact; a settings field may hold either.
FORK_LAYOUTS = {"UpsampleParameter": ("AtcUpsampleParameter",)}


class Message:
    """One Caffe message: typed fields with presence, defaults and unknown bytes."""

    __slots__ = ("type_name", "_fields", "_values", "unknown_fields", "unknown_text", "wire_number",
                 "_attach")

    def __init__(self, type_name: str, **values):
        if type_name not in MESSAGES:
            raise KeyError(f"unknown Caffe message type {type_name!r}")
        object.__setattr__(self, "type_name", type_name)
        object.__setattr__(self, "_fields", MESSAGES[type_name])
        object.__setattr__(self, "_values", {})
        # Fields the schema does not know, kept as their wire bytes so that a
        # binary round trip writes them back untouched.
        object.__setattr__(self, "unknown_fields", b"")
        # Fields of a text file that the schema does not know, each as its text
        # ('bn_param { frozen: true }'), written back to text in this message.
        object.__setattr__(self, "unknown_text", ())
        # A fork's settings read from another field number than this schema's
        # (OpenCV's norm_param 149, SegNet's upsample_param 137): written back there.
        object.__setattr__(self, "wire_number", None)
        # Set by `settings`: put this (absent) sub-message in its parent on first write.
        object.__setattr__(self, "_attach", None)
        for name, value in values.items():
            setattr(self, name, value)

    # -- field access -------------------------------------------------------
    def _spec(self, name: str):
        try:
            return self._fields[name]
        except KeyError:
            raise AttributeError(f"{self.type_name} has no field {name!r}") from None

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        number, kind, repeated, default, type_name = self._spec(name)
        values = self._values
        if name in values:
            return values[name]
        if repeated:
            # An empty repeated field is the same as an absent one, so it can
            # be created on first access without changing what is written.
            field = RepeatedField(kind, type_name, f"{self.type_name}.{name}")
            values[name] = field
            return field
        if kind == "message":
            return Message(type_name)  # a detached default, like protobuf's
        return default

    def __setattr__(self, name: str, value) -> None:
        number, kind, repeated, default, type_name = self._spec(name)
        if self._attach is not None:
            attach = self._attach
            object.__setattr__(self, "_attach", None)
            attach(self)
        where = f"{self.type_name}.{name}"
        if value is None:
            self._values.pop(name, None)
            return
        if repeated:
            self._values[name] = RepeatedField(kind, type_name, where, value)
        elif kind == "message":
            if isinstance(value, dict):
                value = Message(type_name, **value)
            if not isinstance(value, Message) or (value.type_name != type_name and value.type_name
                                                  not in FORK_LAYOUTS.get(type_name, ())):
                raise TypeError(f"{where}: expected a {type_name}, got {value!r}")
            self._values[name] = value
        else:
            self._values[name] = _check_scalar(kind, type_name, value, where)

    def __delattr__(self, name: str) -> None:
        self.clear(name)

    def has(self, name: str) -> bool:
        """Whether the field is present (a repeated field: non-empty)."""
        self._spec(name)
        value = self._values.get(name)
        if isinstance(value, list):
            return len(value) > 0
        return value is not None

    def clear(self, name: str) -> None:
        self._spec(name)
        self._values.pop(name, None)

    def mutable(self, name: str) -> Message:
        """The sub-message `name`, created (and so made present) if absent."""
        number, kind, repeated, default, type_name = self._spec(name)
        if kind != "message" or repeated:
            raise TypeError(f"{self.type_name}.{name} is not a singular message field")
        if self._attach is not None:
            attach = self._attach
            object.__setattr__(self, "_attach", None)
            attach(self)
        if name not in self._values:
            self._values[name] = Message(type_name)
        return self._values[name]

    def settings(self, name: str) -> Message:
        """The sub-message `name`; when absent, a default that becomes present
        only once a field of it is set (reading never adds it to what is written)."""
        number, kind, repeated, default, type_name = self._spec(name)
        if kind != "message" or repeated:
            raise TypeError(f"{self.type_name}.{name} is not a singular message field")
        if name in self._values:
            return self._values[name]
        detached = Message(type_name)
        object.__setattr__(detached, "_attach",
                           lambda child: self._values.setdefault(name, child))
        return detached

    def present_fields(self) -> list[str]:
        """Names of present fields, in schema declaration order."""
        return [name for name in self._fields if self.has(name)]

    def field_spec(self, name: str) -> tuple:
        """(number, kind, repeated, default, type name) for a field."""
        return self._spec(name)

    # -- conversions and comparison --------------------------------------------
    def to_dict(self) -> dict:
        """Present fields as plain Python values (messages become dicts).

        float (32-bit) fields are given as the shortest decimal that reads
        back to the same float32 (0.001, not 0.0010000000474974513).
        """
        out = {}
        for name in self.present_fields():
            value = self._values[name]
            is_float32 = self._fields[name][1] == "float"
            if isinstance(value, Message):
                out[name] = value.to_dict()
            elif isinstance(value, list):
                out[name] = [v.to_dict() if isinstance(v, Message)
                             else (_short_float32(v) if is_float32 else v) for v in value]
            else:
                out[name] = _short_float32(value) if is_float32 else value
        return out

    def copy(self) -> Message:
        clone = Message(self.type_name)
        for name in self.present_fields():
            value = self._values[name]
            if isinstance(value, Message):
                value = value.copy()
            elif isinstance(value, list):
                value = [v.copy() if isinstance(v, Message) else v for v in value]
            setattr(clone, name, value)
        object.__setattr__(clone, "unknown_fields", self.unknown_fields)
        object.__setattr__(clone, "unknown_text", self.unknown_text)
        object.__setattr__(clone, "wire_number", self.wire_number)
        return clone

    def __eq__(self, other) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return (
            self.type_name == other.type_name
            and self.to_dict() == other.to_dict()
            and self.unknown_fields == other.unknown_fields
            and self.unknown_text == other.unknown_text
        )

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items())
        return f"{self.type_name}({fields})"


def unknown_in(message: Message, where: str) -> list[str]:
    """What `message` (at any depth) holds that the schema does not know:
    text fields by name ('dropout_param.scale_train'), binary ones by where
    they sit and their size."""
    found = [f"{where}.{_first_word(text)}" for text in message.unknown_text]
    if message.unknown_fields:
        found.append(f"{where}: {len(message.unknown_fields)} bytes of fields known only by number")
    for name in message.present_fields():
        value = getattr(message, name)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, Message):
                found += unknown_in(item, f"{where}.{name}")
    return found


def _first_word(text: str) -> str:
    word = text.strip().split(None, 1)[0] if text.strip() else text
    for stop in ":{<":
        word = word.split(stop, 1)[0]
    return word
