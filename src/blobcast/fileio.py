"""Reading inputs and writing outputs safely.

Inputs: only regular files are opened (a FIFO, a device or a socket could
block forever or never end). Outputs: a temporary file beside the
destination, renamed into place only when complete and checked, created
exclusively unless replacing is allowed, never half-written; several outputs
of one operation appear together or not at all.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from .errors import BlobcastError, FormatError
from .stopping import (  # noqa: F401  (check_stop: for writers)
    check_stop,
    pause_point,
    record_committed,
    uninterruptible,
)

# Temporary path -> the destination it will become (writers that name
# companion files need the final folder).
_final_paths: dict[str, str] = {}
# Temporary folders not yet removed: a signal landing between a `finally:`
# and the removal it starts is caught up with by remove_temporary_folders().
_workspaces: set[str] = set()


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- inputs ---------------------------------------------------------------------------------
def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def check_regular_file(path: str, error=FormatError) -> None:
    """Refuse, without opening it, anything but an existing regular file."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise error("no such file", path) from None
    except PermissionError:
        raise error("permission denied", path) from None
    except OSError as problem:
        raise error(f"cannot be read ({problem.strerror or problem})", path) from None
    if stat.S_ISDIR(mode):
        raise error("is a directory, not a file", path)
    if not stat.S_ISREG(mode):
        raise error(f"is {_kind(mode)}, not a regular file; refused", path)


def open_regular(path: str):
    """Open a regular file for reading (binary). Non-blocking open, then checked
    again on the open descriptor, so a file swapped for a FIFO cannot hang us."""
    check_regular_file(path)
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
                             | getattr(os, "O_CLOEXEC", 0))
    except PermissionError:
        raise FormatError("permission denied", path) from None
    except OSError as problem:
        raise FormatError(f"cannot be read ({problem.strerror or problem})", path) from None
    mode = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        raise FormatError(f"is {_kind(mode)}, not a regular file; refused", path)
    return os.fdopen(descriptor, "rb")


def _same_file(first: str, second: str) -> bool:
    if os.path.realpath(first) == os.path.realpath(second):
        return True
    try:  # hard links, and links the resolved paths do not show (bind mounts)
        return os.path.samefile(first, second)
    except OSError:
        return False


def check_distinct(source: str, destination: str) -> None:
    """Refuse to write over the input (by resolved path and by file identity:
    symbolic and hard links included)."""
    if _same_file(source, destination):
        raise BlobcastError("the output is the input file; write somewhere else", destination)


def check_apart(inputs, outputs) -> None:
    """No output is one of the inputs (None entries are options not given)."""
    for output in outputs:
        for used in inputs:
            if used is not None and output is not None:
                check_distinct(os.fspath(used), os.fspath(output))


# -- outputs --------------------------------------------------------------------------------
def final_path(temporary: str) -> str:
    """The destination a temporary path from atomic_destination will become."""
    return _final_paths.get(os.path.abspath(temporary), temporary)


@dataclass
class _Pending:
    destination: str
    workspace: str
    temporary: str
    overwrite: bool
    committed: bool = False

    def files(self) -> list[tuple[str, str]]:
        """(temporary file, final path) pairs: companions first, the main file last."""
        folder, name = os.path.split(self.destination)
        companions = sorted(f for f in os.listdir(self.workspace) if f != os.path.basename(self.temporary))
        return ([(os.path.join(self.workspace, f), os.path.join(folder, f)) for f in companions]
                + [(self.temporary, self.destination)])

    def discard(self) -> None:
        with uninterruptible(reraise=False):  # a second signal cannot leave the folder half removed
            pause_point("cleanup")
            _final_paths.pop(self.temporary, None)
            shutil.rmtree(self.workspace, ignore_errors=True)
            _workspaces.discard(self.workspace)


def remove_temporary_folders() -> None:
    """Remove every temporary folder still there (after an interruption)."""
    with uninterruptible(reraise=False):
        for workspace in list(_workspaces):
            shutil.rmtree(workspace, ignore_errors=True)
            _workspaces.discard(workspace)


def _place(source: str, target: str, overwrite: bool) -> None:
    if overwrite:
        os.replace(source, target)
        return
    # Created exclusively: of two conversions racing to one destination,
    # exactly one succeeds (a check followed by a rename would let both).
    try:
        os.link(source, target)
    except FileExistsError:
        raise BlobcastError("already exists; use --force to replace it", target) from None
    except OSError as problem:
        if problem.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV,
                                 errno.EMLINK, errno.ENOSYS):
            raise
        # A file system without hard links: claim the name, then fill it.
        try:
            os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            raise BlobcastError("already exists; use --force to replace it", target) from None
        os.replace(source, target)
        return
    os.unlink(source)


def _commit(pending: list[_Pending]) -> None:
    check_stop()
    plan = [(p, source, target) for p in pending for source, target in p.files()]
    for p, _, target in plan:
        if not p.overwrite and os.path.exists(target):
            raise BlobcastError("already exists; use --force to replace it", target)
    mode = 0o666 & ~_current_umask()
    for _, source, _ in plan:
        os.chmod(source, mode)
    # Every rename happens, or none: a signal meanwhile is raised after them,
    # when the record says what was written.
    with uninterruptible():
        placed: list[str] = []
        try:
            for p, source, target in plan:
                _place(source, target, p.overwrite)
                placed.append(target)
                pause_point("commit")
        except BaseException:
            # Only files this commit created exclusively can be taken back.
            for (p, _, target) in plan:
                if target in placed and not p.overwrite:
                    os.unlink(target)
            raise
        for p in pending:
            p.committed = True
        record_committed(p.destination for p in pending)


class OutputGroup:
    """Outputs that appear together or not at all (a solver state and the
    weights it names; an imported net's .caffemodel and .prototxt)."""

    def __init__(self):
        self.pending: list[_Pending] = []

    @property
    def committed(self) -> bool:
        """Whether the outputs were renamed into place."""
        return any(p.committed for p in self.pending)

    def __enter__(self) -> OutputGroup:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        try:
            if kind is None:
                _commit(self.pending)
        finally:
            pause_point("unwind")  # where a signal would keep the removals from starting
            for p in self.pending:
                p.discard()


def check_writable(destination: str, overwrite: bool) -> None:
    """Refuse, before any work, a destination that could not be written: a
    folder, a missing folder, or an existing file without `overwrite`."""
    destination = os.path.abspath(destination)
    if os.path.isdir(destination):
        raise BlobcastError("is a directory", destination)
    if os.path.lexists(destination) and not overwrite:
        raise BlobcastError("already exists; use --force to replace it", destination)
    mode = os.lstat(destination).st_mode if os.path.lexists(destination) else stat.S_IFREG
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):  # --force replaces files, not devices
        raise BlobcastError(f"is {_kind(mode)}, not a regular file; refused", destination)
    if not os.path.isdir(os.path.dirname(destination)):
        raise BlobcastError("the output folder does not exist", destination)


@contextmanager
def atomic_destination(destination: str, *, overwrite: bool,
                       group: OutputGroup | None = None) -> Iterator[str]:
    """Yield a temporary path to write; on success it becomes `destination`.

    The path lies in a temporary folder beside the destination and has the
    destination's own name, so files a writer puts beside it (ONNX external
    data) can refer to each other by their final names. On success those move
    out first and the main file last; on any failure the folder is removed.
    With `group`, the renames wait for the group's end.
    """
    destination = os.path.abspath(destination)
    folder, name = os.path.split(destination)
    check_writable(destination, overwrite)
    with uninterruptible(reraise=False):  # the folder exists only with the try that removes it
        try:
            workspace = tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=folder)
        except OSError as error:
            raise BlobcastError(f"cannot write here ({error.strerror})", destination) from error
        pending = _Pending(destination, workspace, os.path.join(workspace, name), overwrite)
        _final_paths[pending.temporary] = destination
        _workspaces.add(workspace)
    deferred = False
    try:
        check_stop()
        pause_point("write")
        yield pending.temporary
        if group is not None:
            group.pending.append(pending)
            deferred = True
        else:
            _commit([pending])
    finally:
        if not deferred:
            pause_point("unwind")  # where a signal would keep the removal from starting
            pending.discard()
