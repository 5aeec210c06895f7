"""Fields of a text file (prototxt) that the schema does not know, kept as text.

Protobuf's text parser refuses a whole file over one field it does not know
(`bn_param`, a fork's `scale_train`, CaffeOnSpark's `source_class`). Before it
parses, the text is scanned against the schema: each unknown field, with its
whole value (a scalar, an identifier, a string, a list, a nested block), is cut
out and remembered with the message it sits in. The cut text is blanked, not
removed, so protobuf's line and column numbers stay those of the file.

The kept fields ride through the protobuf messages as one unknown field under
a number no fork uses (`MARK_NUMBER`), and become each Message's `unknown_text`
(messages.message_from_pb). The text writer prints them back in their message
(`text_with_unknown`); a binary writer has no number for them and names them.
"""

from __future__ import annotations

import re

from google.protobuf import text_format
from google.protobuf.unknown_fields import UnknownFieldSet

from blobcast.errors import FormatError
from blobcast.schema import MESSAGES

from .wire import WireError, iter_fields, length_delimited

MARK_NUMBER = 2**29 - 1  # protobuf's highest field number

_TOKENS = re.compile(r"""
    (?P<skip>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)[fFuUlL]*)
  | (?P<word>[A-Za-z_][\w.]*)
  | (?P<punct>[{}<>\[\]:;,/-])
""", re.VERBOSE)

_CLOSE = {"{": "}", "<": ">", "[": "]"}


class _Tokens:
    """The text's tokens, read one ahead as they are asked for (no list of
    them all: a large file costs no more than its text)."""

    def __init__(self, text: str, path: str):
        self.text, self.path = text, path
        self.position = 0
        self.last_end = 0
        self.next = self._read()

    def _read(self):
        text = self.text
        while self.position < len(text):
            match = _TOKENS.match(text, self.position)
            if match is None:
                self.fail(self.position, f"unexpected character {text[self.position]!r}")
            self.position = match.end()
            if match.lastgroup != "skip":
                return match.lastgroup, match.group(), match.start(), match.end()
        return None

    def fail(self, position: int, problem: str):
        text = self.text
        line = text.count("\n", 0, position) + 1
        column = position - (text.rfind("\n", 0, position) + 1) + 1
        raise FormatError(f"syntax error at line {line}, column {column}: {problem}", self.path)

    def peek(self) -> str | None:
        return self.next[1] if self.next is not None else None

    def peek_kind(self) -> str | None:
        return self.next[0] if self.next is not None else None

    def take(self) -> tuple[str, str, int, int]:
        if self.next is None:
            self.fail(self.last_end, "the text ends inside a field's value")
        item = self.next
        self.last_end = item[3]
        self.next = self._read()
        return item


def _skip_value(tokens: _Tokens) -> None:
    """Past one field value of any shape (after its name and optional colon)."""
    kind, text, start, _ = tokens.take()
    if text in _CLOSE:
        depth = [_CLOSE[text]]
        while depth:
            _, inner, position, _ = tokens.take()
            if inner in _CLOSE:
                depth.append(_CLOSE[inner])
            elif inner in ("}", ">", "]"):
                if inner != depth.pop():
                    tokens.fail(position, f"unbalanced {inner!r}")
        return
    if text == "-":  # -inf, -nan, - 5
        tokens.take()
    elif kind == "string":
        while tokens.peek_kind() == "string":
            tokens.take()  # adjacent strings are one value
    elif kind == "punct":
        tokens.fail(start, f"a value was expected, not {text!r}")


def _scan_message(tokens: _Tokens, type_name: str, where: tuple, close: str | None,
                  found: list) -> None:
    fields = MESSAGES[type_name]
    seen: dict[str, int] = {}
    while True:
        following = tokens.peek()
        if following is None:  # a missing close is protobuf's to report
            return
        if following == close:
            tokens.take()
            return
        if following in (";", ","):
            tokens.take()
            continue
        kind, name, start, _ = tokens.take()
        if name == "[":  # an extension or Any: [type.name]
            while tokens.take()[1] != "]":
                pass
            name = tokens.text[start:tokens.last_end]
        elif kind != "word":
            tokens.fail(start, f"a field name was expected, not {name!r}")
        if tokens.peek() == ":":
            tokens.take()
        spec = fields.get(name)
        if spec is None:
            _skip_value(tokens)
            found.append((where, start, tokens.last_end))
        elif spec[1] == "message":
            _scan_message_value(tokens, spec[4], where, name, seen, found)
        else:
            _skip_value(tokens)


def _scan_message_value(tokens, type_name, where, name, seen, found) -> None:
    _, opening, start, _ = tokens.take()
    if opening == "[":  # a list of messages
        while tokens.peek() != "]":
            if tokens.peek() == ",":
                tokens.take()
                continue
            _scan_message_value(tokens, type_name, where, name, seen, found)
        tokens.take()
        return
    if opening not in ("{", "<"):
        tokens.fail(start, f"{name} is a message: '{{' was expected, not {opening!r}")
    index = seen.get(name, 0)
    seen[name] = index + 1
    _scan_message(tokens, type_name, (*where, (name, index)), _CLOSE[opening], found)


def cut_unknown_fields(text: str, type_name: str, path: str) -> tuple[str, list]:
    """(the text with unknown fields blanked, [(where, field text)]); `where`
    is the path of (field name, occurrence) pairs to the message holding it."""
    tokens = _Tokens(text, path)
    found: list = []
    _scan_message(tokens, type_name, (), None, found)
    if not found:
        return text, []
    pieces, kept, position = [], [], 0
    for where, start, end in found:
        piece = text[start:end]
        kept.append((where, _dedent(piece)))
        pieces += [text[position:start], re.sub(r"[^\n]", " ", piece)]
        position = end
    pieces.append(text[position:])
    return "".join(pieces), kept


def _dedent(piece: str) -> str:
    lines = piece.split("\n")
    if len(lines) == 1:
        return piece
    indents = [len(line) - len(line.lstrip(" ")) for line in lines[1:] if line.strip()]
    closing = min(indents) if indents else 0
    return "\n".join([lines[0], *(line[closing:] for line in lines[1:])])


def attach(message, kept: list) -> None:
    """Put the kept fields into the parsed protobuf `message`, each in its place."""
    for where, piece in kept:
        target = message
        for name, index in where:
            value = getattr(target, name)
            target = value[index] if hasattr(value, "add") or isinstance(value, list) else value
        raw = piece.encode("utf-8")
        target.MergeFromString(length_delimited(MARK_NUMBER, len(raw)) + raw)


def split_marks(unknown: bytes) -> tuple[tuple[str, ...], bytes]:
    """(kept text fields, the other unknown bytes) of a message's unknown bytes."""
    if not unknown:
        return (), unknown
    texts, rest = [], bytearray()
    try:
        for number, wire_type, tag_start, start, end in iter_fields(unknown, 0, len(unknown)):
            if number == MARK_NUMBER and wire_type == 2:
                texts.append(bytes(unknown[start:end]).decode("utf-8", "replace"))
            else:
                rest += unknown[tag_start:end]
    except WireError:
        return (), unknown
    return tuple(texts), bytes(rest)


def marks(texts) -> bytes:
    out = bytearray()
    for text in texts:
        raw = text.encode("utf-8")
        out += length_delimited(MARK_NUMBER, len(raw)) + raw
    return bytes(out)


def field_name(piece: str) -> str:
    """The name a kept field is given in the text."""
    return re.split(r"[\s:{<]", piece.strip(), maxsplit=1)[0]


def _formatter(message, indent: int, as_one_line: bool):
    if not len(UnknownFieldSet(message)):
        return None
    texts, rest = split_marks(_top_level_unknown(message))
    if not texts:
        return None
    bare = type(message)()
    bare.MergeFromString(_without_mark(message.SerializeToString()))
    known = text_format.MessageToString(bare, indent=indent, as_one_line=as_one_line,
                                        message_formatter=_formatter)
    pad = " " * indent
    extra = [pad + line if line.strip() else line for text in texts for line in text.split("\n")]
    out = known.rstrip("\n").split("\n") if known.strip() else []
    out += extra
    return "\n".join(out)[indent:] if out else ""


def _top_level_unknown(message) -> bytes:
    raw = message.SerializeToString()
    out = bytearray()
    for number, _wire, tag_start, _start, end in iter_fields(raw, 0, len(raw)):
        if number not in message.DESCRIPTOR.fields_by_number:
            out += raw[tag_start:end]
    return bytes(out)


def _without_mark(raw: bytes) -> bytes:
    out = bytearray()
    for number, _wire, tag_start, _start, end in iter_fields(raw, 0, len(raw)):
        if number != MARK_NUMBER:
            out += raw[tag_start:end]
    return bytes(out)


def text_with_unknown(message) -> str:
    """`message` as text, each kept text field printed back in its message."""
    return text_format.MessageToString(message, message_formatter=_formatter)
