"""Writing outputs safely: a temporary file beside the destination, renamed
into place only when complete and checked; nothing left behind on failure."""

from __future__ import annotations

import os
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
    """Yield a temporary path to write; on success it replaces `destination`."""
    destination = os.path.abspath(destination)
    folder = os.path.dirname(destination)
    if os.path.isdir(destination):
        raise BlobcastError("is a directory", destination)
    if os.path.exists(destination) and not overwrite:
        raise BlobcastError("already exists; use --force to replace it", destination)
    if not os.path.isdir(folder):
        raise BlobcastError("the output folder does not exist", destination)
    try:
        handle, temporary = tempfile.mkstemp(
            prefix=f".{os.path.basename(destination)}.", suffix=".partial", dir=folder)
    except OSError as error:
        raise BlobcastError(f"cannot write here ({error.strerror})", destination) from error
    os.close(handle)
    try:
        yield temporary
        check_stop()
        os.chmod(temporary, 0o666 & ~_current_umask())
        os.replace(temporary, destination)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
