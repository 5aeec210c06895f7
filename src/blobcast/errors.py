"""The one error type users see, and warnings that travel with a result."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


class BlobcastError(Exception):
    """A problem with an input, an output or a request, said in one line.

    `path` names the file concerned (when there is one); the message says what
    is wrong with it. The original exception, if any, is chained as __cause__.
    """

    exit_code = 2

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.path = os.fspath(path) if path is not None else None
        self.problem = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


@contextmanager
def about(path: str | os.PathLike | None) -> Iterator[None]:
    """Errors raised inside without a file name are about `path`."""
    try:
        yield
    except BlobcastError as error:
        if error.path is not None or path is None:
            raise
        raise type(error)(error.problem, path) from error.__cause__


class FormatError(BlobcastError):
    """A file could not be read or written in the format it claims."""


class CheckFailed(BlobcastError):
    """A verification ran and found a difference (exit code 1)."""

    exit_code = 1


class BlobcastWarning(UserWarning):
    """Something the user should know that does not stop the work."""


class BlobcastNote(BlobcastWarning):
    """A choice made for the user that they should hear of (printed as a note)."""
