"""Conversion between protobuf messages and blobcast's protobuf-free Messages."""

from __future__ import annotations

from google.protobuf.unknown_fields import UnknownFieldSet

from blobcast.errors import FormatError
from blobcast.params import Message
from blobcast.schema import ENUMS, FORK_SETTINGS, LAYER_TYPE_FIELDS, MESSAGES

from . import caffe_pb2
from .text_fields import field_name, marks, split_marks
from .wire import WireError, iter_fields, length_delimited

# The fork settings a layer type reads, by field number: (number, settings
# field, message). A binary file's LayerParameter field is read as a fork's
# setting only through its layer's type, because forks number one setting
# differently and reuse each other's numbers (10001 is R-FCN's
# psroi_pooling_param and CaffeOnSpark's string source_class). Candidates are
# tried in order while the setting is absent; one is taken only if its bytes
# are length-delimited and decode as that message with no field out of place
# (numbers and wire types). Anything else stays an unknown field.
FORK_FIELD_NUMBERS = {
    "Normalize": [(206, "norm_param", "NormalizeParameter"),                # SSD (weiliu89)
                  (149, "norm_param", "NormalizeParameter")],               # OpenCV's caffe.proto
    "Permute": [(202, "permute_param", "PermuteParameter"),                 # SSD
                (148, "permute_param", "PermuteParameter")],                # OpenCV
    "DetectionOutput": [(204, "detection_output_param", "DetectionOutputParameter"),  # SSD
                        (147, "detection_output_param", "DetectionOutputParameter")],  # OpenCV
    "PriorBox": [(203, "prior_box_param", "PriorBoxParameter"),             # SSD
                 (150, "prior_box_param", "PriorBoxParameter")],            # OpenCV
    "Upsample": [(149, "upsample_param", "UpsampleParameter"),              # YOLOv3 ports
                 (137, "upsample_param", "UpsampleParameter"),              # SegNet
                 (150, "upsample_param", "UpsampleParameter"),              # HiSilicon's darknet port
                 (160, "upsample_param", "AtcUpsampleParameter")],          # Huawei ATC
    "ShuffleChannel": [(164, "shuffle_channel_param", "ShuffleChannelParameter"),  # farmingyard
                       (159, "shuffle_channel_param", "ShuffleChannelParameter")],  # Huawei ATC
    "Interp": [(166, "interp_param", "InterpParameter")],                   # merged fork protos
    "PSROIPooling": [(10001, "psroi_pooling_param", "PSROIPoolingParameter"),  # R-FCN
                     (10002, "psroi_pooling_param", "PSROIPoolingParameter")],  # OpenCV
    "ROIPooling": [(8266711, "roi_pooling_param", "ROIPoolingParameter")],  # Fast/Faster R-CNN
    "BN": [(152, "bn_param", "BNParameter"),                                # PSPNet, DeepLab
           (45, "bn_param", "SegNetBNParameter")],                          # SegNet, ENet
    "Proposal": [(201, "proposal_param", "ProposalParameter")],             # OpenCV, Huawei ATC
}

# Where a text parse puts a fork setting given by name (whatever the layer's
# type): this base plus the setting's own number, a range no fork uses.
TEXT_NUMBER_BASE = 2**28
_FORK_BY_TEXT_NUMBER = {TEXT_NUMBER_BASE + MESSAGES["LayerParameter"][name][0]: name
                        for name in FORK_SETTINGS}


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
    texts, unknown = split_marks(_unknown_bytes(pb))
    if unknown:
        object.__setattr__(message, "unknown_fields", unknown)
    if texts:
        object.__setattr__(message, "unknown_text", texts)
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


def _take_setting(pb, message: Message, number: int, name: str, type_name: str,
                  wire_number: int | None) -> bool:
    raw, remove = _field_bytes(pb, message, number)
    if raw is None:
        return False
    try:
        settings = getattr(caffe_pb2, type_name).FromString(raw)
    except Exception:  # protobuf raises several types on garbage
        return False
    if split_marks(_unknown_bytes(settings))[1]:
        return False
    remove()
    value = message_from_pb(settings)
    object.__setattr__(value, "wire_number", wire_number)
    setattr(message, name, value)
    return True


def _unknown_numbers(raw: bytes) -> set[int]:
    try:
        return {number for number, *_ in iter_fields(raw, 0, len(raw))}
    except WireError:
        return set()


def _resolve_fork_numbers(pb, message: Message) -> None:
    present = _unknown_numbers(message.unknown_fields) if message.unknown_fields else set()
    for number in present & _FORK_BY_TEXT_NUMBER.keys():  # named in text: any layer type
        name = _FORK_BY_TEXT_NUMBER[number]
        _take_setting(pb, message, number, name, MESSAGES["LayerParameter"][name][4], None)
    for number, name, type_name in FORK_FIELD_NUMBERS.get(pb.type, ()):
        if not message.has(name):
            _take_setting(pb, message, number, name, type_name, number)


def _forked_names(message: Message, numbering: str) -> list[str]:
    """The LayerParameter fields written by number rather than through
    protobuf: fork settings, and (in binary) settings read from a fork's number."""
    return [name for name in message.present_fields() if name in FORK_SETTINGS or (
        numbering != "text" and getattr(getattr(message, name), "wire_number", None) is not None)]


def fork_setting_numbers(message: Message, numbering: str = "binary"):
    """(number, payload) of each fork setting of a LayerParameter Message: at
    the number it was read from, else its fork's own number (`binary`), or at
    the number a text parse gives it by name (`text`)."""
    fields = MESSAGES["LayerParameter"]
    for name in _forked_names(message, numbering):
        value = getattr(message, name)
        number = value.wire_number if value.wire_number is not None else fields[name][0]
        if numbering == "text":
            number = TEXT_NUMBER_BASE + fields[name][0]
            if value.type_name != fields[name][4]:  # a fork's own layout, written by name
                value = BY_NAME[value.type_name](value)
        mode = "text" if numbering == "text" else "binary"
        yield number, pb_from_message(getattr(caffe_pb2, value.type_name), value,
                                      mode).SerializeToString()


def fill_pb(pb, message: Message, fork_settings: str = "binary") -> None:
    """Set the fields of protobuf message `pb` from `message`. A LayerParameter's
    fork settings (which protobuf's LayerParameter lacks) become unknown fields
    at their binary numbers (`binary`), at the numbers a text parse gives them
    (`text`), or are left out for the binary writer to splice in (`skip`).
    Unknown fields go with them: numbered ones in binary, named ones in text."""
    forked: list[str] = []
    if pb.DESCRIPTOR.name == "LayerParameter":
        forked = _forked_names(message, fork_settings)
        if fork_settings != "skip":
            for number, payload in fork_setting_numbers(message, fork_settings):
                pb.MergeFromString(length_delimited(number, len(payload)) + payload)
    nested = "text" if fork_settings == "text" else "binary"
    carried = {name: carrier for fields in LAYER_TYPE_FIELDS.values()
               for name, (carrier, _) in fields.items()} if pb.DESCRIPTOR.name == "LayerParameter" else {}
    for name in message.present_fields():
        if name not in forked:
            _fill_field(pb, message, name, carried, nested)
    if fork_settings == "text":  # text holds named fields, not numbered ones
        if message.unknown_text:
            pb.MergeFromString(marks(message.unknown_text))
    elif message.unknown_fields:
        pb.MergeFromString(message.unknown_fields)


def _fill_field(pb, message: Message, name: str, carried: dict, nested: str) -> None:
    """One present field of `message` onto `pb`."""
    _number, kind, repeated, _default, type_name = message.field_spec(name)
    value = getattr(message, name)
    if name in carried:  # written under the Caffe field's number, as the fork does
        raw = pb_from_message(getattr(caffe_pb2, type_name), value, nested).SerializeToString()
        getattr(pb, carried[name]).MergeFromString(raw)
        getattr(pb, carried[name]).SetInParent()
    elif kind == "message" and repeated:
        target = getattr(pb, name)
        for item in value:
            fill_pb(target.add(), item, nested)
    elif kind == "message":
        if value.type_name != type_name:  # a fork's own layout, written by name
            value = BY_NAME[value.type_name](value)
        fill_pb(getattr(pb, name), value, nested)
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


def pb_from_message(pb_class, message: Message, fork_settings: str = "binary"):
    pb = pb_class()
    fill_pb(pb, message, fork_settings)
    return pb


_WIRE_TYPES = {0: "varint", 1: "fixed64", 2: "length-delimited", 3: "group", 5: "fixed32"}


def _unknown_in(message: Message, where: str):
    raw = message.unknown_fields
    try:
        for number, wire_type, _tag, start, end in iter_fields(raw, 0, len(raw)):
            yield {"where": where, "number": number, "wire_type": _WIRE_TYPES[wire_type],
                   "bytes": end - start}
    except WireError:  # kept as they came; listed as one piece
        yield {"where": where, "number": None, "wire_type": "malformed", "bytes": len(raw)}
    for text in message.unknown_text:
        yield {"where": where, "name": field_name(text), "text": text}
    for name in message.present_fields():
        value = getattr(message, name)
        items = value if isinstance(value, list) else [value]
        for index, item in enumerate(items):
            if isinstance(item, Message):
                inner = f"{name}[{index}]" if isinstance(value, list) else name
                yield from _unknown_in(item, f"{where}.{inner}" if where else inner)


def unknown_fields(model) -> list[dict]:
    """Every field the schema does not know, where it sits: binary ones by
    number, wire type and size; text ones by name and text."""
    found = [{"layer": None, **entry} for entry in _unknown_in(model.net, "")]
    for layer in model.layers:
        found += [{"layer": layer.name, **entry} for entry in _unknown_in(layer.spec, "")]
    return found


def fields_left_out(model, output: str, kept_layers=None) -> str | None:
    """A note naming the unknown fields that `output` ('text' or 'binary')
    cannot hold (text has no numbers, binary no names), or None. `kept_layers`:
    the only layers whose binary settings the output keeps (ONNX keeps them
    for the layers it holds as Caffe layers), when not all."""
    lost = [entry for entry in unknown_fields(model) if ("name" in entry) == (output == "binary")
            or (kept_layers is not None and entry["layer"] not in kept_layers)]
    if not lost:
        return None
    names = []
    for entry in lost[:8]:
        place = f"layer {entry['layer']!r}" if entry["layer"] is not None else "the net"
        inner = f"{entry['where']}." if entry.get("where") else ""
        label = entry["name"] if "name" in entry else f"field {entry['number']}"
        names.append(f"{place} {inner}{label}")
    more = f" and {len(lost) - 8} more" if len(lost) > 8 else ""
    return f"{len(lost)} left out ({', '.join(names)}{more})"
