"""Writing outputs safely: a temporary file beside the destination, renamed
into place only when complete and checked; nothing left behind on failure."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import BlobcastError

# Set by a signal handler (SIGTERM). The handler also raises, but Python
# ignores exceptions raised where a signal happens to land inside a callback
# (a weakref finalizer, say), so writers also check this between chunks and
# the final rename never happens once it is set.
_stop_signal: int | None = None


class Interrupted(KeyboardInterrupt):
    """The process was asked to stop; the output was not written."""


def request_stop(signal_number: int) -> None:
    global _stop_signal
    _stop_signal = signal_number
    raise Interrupted(f"signal {signal_number}")


def stop_requested() -> int | None:
    return _stop_signal


def check_stop() -> None:
    if _stop_signal is not None:
        raise Interrupted(f"signal {_stop_signal}")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_distinct(source: str, destination: str) -> None:
    """Refuse to write over the input (also through links)."""
    if os.path.exists(destination) and os.path.exists(source):
        if os.path.samefile(source, destination):
            raise BlobcastError("the output is the input file; write somewhere else", destination)


@contextmanager
def atomic_destination(destination: str, *, overwrite: bool) -> Iterator[str]:
    """Yield a temporary path to write; on success it replaces `destination`.

    The path lies in a temporary folder beside the destination and has the
    destination's own name, so files a writer puts beside it (ONNX external
    data) can refer to each other by their final names. On success those move
    out first and the main file last; on any failure the folder is removed.
    """
    destination = os.path.abspath(destination)
    folder, name = os.path.split(destination)
    if os.path.isdir(destination):
        raise BlobcastError("is a directory", destination)
    if os.path.exists(destination) and not overwrite:
        raise BlobcastError("already exists; use --force to replace it", destination)
    if not os.path.isdir(folder):
        raise BlobcastError("the output folder does not exist", destination)
    try:
        workspace = tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=folder)
    except OSError as error:
        raise BlobcastError(f"cannot write here ({error.strerror})", destination) from error
    temporary = os.path.join(workspace, name)
    try:
        yield temporary
        check_stop()
        companions = sorted(f for f in os.listdir(workspace) if f != name)
        for companion in companions:
            target = os.path.join(folder, companion)
            if os.path.exists(target) and not overwrite:
                raise BlobcastError("already exists; use --force to replace it", target)
        mode = 0o666 & ~_current_umask()
        for companion in companions:
            os.chmod(os.path.join(workspace, companion), mode)
            os.replace(os.path.join(workspace, companion), os.path.join(folder, companion))
        os.chmod(temporary, mode)
        os.replace(temporary, destination)
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
