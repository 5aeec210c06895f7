"""Text from files, made safe for a terminal.

Layer, blob, file and HDF5 names come from the file. Shown raw, an escape
sequence could rewrite the screen (hide a Python layer from `inspect`), and
a newline or carriage return could forge a line of blobcast's own. Every
human-readable line shows such characters escaped; --json output escapes
them through JSON itself.
"""

from __future__ import annotations

import re

from rich.markup import escape

# C0 controls, DEL, C1 controls, and the Unicode format characters that
# reorder or hide text (bidirectional overrides and isolates, zero-width).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


def _escaped(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text) -> str:
    """`text` with control and hidden-formatting characters written as escapes."""
    return _UNSAFE.sub(_escaped, str(text))


def safe(text) -> str:
    """Printable and free of rich markup: for text from files in rich output."""
    return escape(printable(text))
