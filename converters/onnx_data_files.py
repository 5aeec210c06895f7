"""Which external data files blobcast wrote, so that replacing a model can
remove the data only the replaced model used, and nothing else.

A model being replaced is untrusted: its external data entries may name any
file of its folder tree (the source of the conversion, the user's notes).
A data file is blobcast's own only when all of these hold:

- it sits beside the model, under the name blobcast gives data files
  (`<model>.data` or `<model>.<8 hex digits>.data`), a regular file, not a link;
- it starts with blobcast's header, whose token is the one recorded in the
  model's metadata (written together, so model and data belong together);
- no other ONNX model in the folder names it (a copy of the model still uses it).

Anything not proven so is kept.
"""

from __future__ import annotations

import mmap
import os
import re
import secrets
import stat

from blobcast.errors import BlobcastError

DATA_TOKEN_KEY = "blobcast.external_data"  # metadata: the token in the data file's header
_MAGIC = b"blobcast external data\n"
HEADER_BYTES = 64  # the first tensor starts here, aligned like the rest
_MAX_SIBLINGS = 256  # more ONNX files beside it than this: the reference scan is not tried


def new_token() -> str:
    return secrets.token_hex(16)


def header(token: str) -> bytes:
    """The bytes a data file starts with (the tensors follow at HEADER_BYTES)."""
    text = _MAGIC + token.encode("ascii") + b"\n"
    return text + b"\0" * (HEADER_BYTES - len(text))


def _named_as_ours(data_path: str, model_path: str) -> bool:
    folder, model_name = os.path.split(os.path.realpath(model_path))
    if os.path.dirname(data_path) != folder:
        return False
    pattern = re.escape(model_name) + r"(\.[0-9a-f]{8})?\.data"
    return re.fullmatch(pattern, os.path.basename(data_path)) is not None


def _starts_with(path: str, expected: bytes) -> bool:
    try:
        mode = os.lstat(path).st_mode
        if not stat.S_ISREG(mode):
            return False
        with open(path, "rb") as handle:
            return handle.read(len(expected)) == expected
    except OSError:
        return False


def owned_data_files(model_path: str, token: str | None, named: set[str]) -> set[str]:
    """Those of `named` (a model's external data files) that blobcast wrote
    for the model at `model_path`, whose metadata holds `token`."""
    if not token:
        return set()
    expected = header(token)
    return {path for path in named
            if _named_as_ours(path, model_path) and _starts_with(path, expected)}


def _mentions(path: str, names: list[bytes]) -> set[bytes]:
    """Which of `names` occur in the file's bytes (a conservative test for
    a reference: a false match keeps a file, never removes one)."""
    try:
        with open(path, "rb") as handle:
            if os.fstat(handle.fileno()).st_size == 0:
                return set()
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
                return {name for name in names if view.find(name) >= 0}
    except (OSError, ValueError):
        return set(names)  # unreadable: it may name them


def unreferenced(candidates: set[str], model_path: str) -> set[str]:
    """Those of `candidates` no other .onnx file in the model's folder names."""
    folder = os.path.dirname(os.path.realpath(model_path))
    model = os.path.realpath(model_path)
    try:
        siblings = [entry.path for entry in os.scandir(folder)
                    if entry.name.endswith(".onnx") and os.path.realpath(entry.path) != model]
    except OSError:
        return set()
    if len(siblings) > _MAX_SIBLINGS:
        return set()
    names = {os.path.basename(path).encode("utf-8", "surrogateescape"): path for path in candidates}
    named: set[bytes] = set()
    for sibling in siblings:
        named |= _mentions(sibling, list(names))
    return {path for name, path in names.items() if name not in named}


def stale_data_remover(model_path: str, data_files, token_of):
    """What removes, once a replaced model is gone, the data files blobcast
    wrote for it that the new model does not use and nothing else names.
    `data_files(path)` and `token_of(path)` read a model's data file set and
    recorded token."""
    try:
        old = owned_data_files(model_path, token_of(model_path), data_files(model_path))
    except BlobcastError:
        old = set()

    def remove() -> None:
        if not old:
            return
        try:
            current = data_files(model_path)
        except BlobcastError:
            return
        for path in unreferenced(old - current, model_path):
            try:
                os.unlink(path)
            except OSError:
                pass

    return remove
