"""Just enough of the protobuf wire format to find large packed fields.

Written by hand, not with protobuf, for speed and memory: protobuf's parser
turns a packed float field into a Python list (tens of bytes per number).
Scanning the tags instead lets NumPy view the float bytes in place in a
memory-mapped file, and lets the writer stream array buffers straight out.
Every scanner checks each length against the bytes really there.
"""

from __future__ import annotations

import os

VARINT, FIXED64, LENGTH_DELIMITED, START_GROUP, END_GROUP, FIXED32 = 0, 1, 2, 3, 4, 5


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def read_varint(buf, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise WireError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise WireError("varint longer than 10 bytes")


def encode_varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # negative int32/int64 are ten-byte two's complement
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def encode_tag(field_number: int, wire_type: int) -> bytes:
    return encode_varint((field_number << 3) | wire_type)


def iter_fields(buf, start: int, end: int):
    """Yield (field number, wire type, tag start, value start, value end).

    For VARINT fields value start/end span the varint bytes.
    """
    pos = start
    while pos < end:
        tag_start = pos
        key, pos = read_varint(buf, pos, end)
        field_number, wire_type = key >> 3, key & 7
        if field_number == 0:
            raise WireError(f"invalid field number 0 at byte {tag_start}")
        if wire_type == VARINT:
            _, value_end = read_varint(buf, pos, end)
        elif wire_type == FIXED64:
            value_end = pos + 8
        elif wire_type == FIXED32:
            value_end = pos + 4
        elif wire_type == LENGTH_DELIMITED:
            length, pos = read_varint(buf, pos, end)
            value_end = pos + length
        elif wire_type == START_GROUP:
            value_end = _skip_group(buf, pos, end, field_number)
        else:
            raise WireError(f"invalid wire type {wire_type} at byte {tag_start}")
        if value_end > end:
            raise WireError(
                f"field {field_number} at byte {tag_start} claims {value_end - pos} bytes "
                f"but only {end - pos} remain"
            )
        yield field_number, wire_type, tag_start, pos, value_end
        pos = value_end


def _skip_group(buf, pos: int, end: int, group_number: int) -> int:
    """Return the position after the END_GROUP tag of a (deprecated) group field."""
    while pos < end:
        key, after = read_varint(buf, pos, end)
        if key & 7 == END_GROUP:
            if key >> 3 != group_number:
                raise WireError("mismatched end of group")
            return after
        _, _, _, _, pos = next(iter_fields(buf, pos, end))
    raise WireError("unterminated group")


def read_packed_varints(buf, start: int, end: int) -> list[int]:
    values = []
    pos = start
    while pos < end:
        value, pos = read_varint(buf, pos, end)
        values.append(value)
    return values


def as_signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def length_delimited(field_number: int, payload_length: int) -> bytes:
    """Tag and length prefix of a length-delimited field."""
    return encode_tag(field_number, LENGTH_DELIMITED) + encode_varint(payload_length)


def splice_at_field(known: bytes, field_number: int, inserted: list) -> list:
    """Chunks of a serialized message with `inserted` placed where protobuf puts
    field `field_number`: fields are written in number order, so before the
    first field with a higher number. `known` must hold known fields only
    (unknown fields go last, after everything)."""
    split = len(known)
    for number, _wire, tag_start, _start, _end in iter_fields(known, 0, len(known)):
        if number > field_number:
            split = tag_start
            break
    return [known[:split], *inserted, known[split:]]


def write_chunks(path: str, chunks: list, progress=None) -> None:
    """Write byte chunks (bytes or buffer views) to `path`, reporting progress."""
    from .mapping import FileChunk, copy_file_bytes

    with open(path, "wb") as handle:
        for chunk in chunks:
            if not len(chunk):
                continue
            if isinstance(chunk, FileChunk):
                handle.flush()
                copy_file_bytes(handle.fileno(), handle.tell(), chunk.tensor)
                handle.seek(len(chunk), os.SEEK_CUR)
            else:
                handle.write(chunk)
            if progress is not None:
                progress(len(chunk))
