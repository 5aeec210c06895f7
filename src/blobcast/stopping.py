"""Stopping on SIGINT and SIGTERM: one line, exit 130 or 143, nothing left
behind, and the line true.

The first signal raises `Interrupted` where the program is, so the work under
way unwinds and removes its temporary files. Steps that must not be cut in
half (renaming outputs into place, removing a temporary folder) run
`uninterruptible()`: a signal arriving meanwhile is recorded and raised when
the step is done. Later signals are recorded only: a second Ctrl-C cannot
cut the clean-up of the first short.

This module imports nothing heavy: the command line installs the handlers
before it imports NumPy or protobuf.
"""

from __future__ import annotations

import os
import signal

_stop_signal: int | None = None  # the first signal received
_signals_seen = 0
_deferring = 0  # depth of uninterruptible() sections in the main thread
_paused: set[str] = set()  # pause_point's steps already reached
# Destinations renamed into place by this process, so an interruption after
# that is reported as such, not as "nothing was written".
_committed: list[str] = []


class Interrupted(BaseException):
    """The process was asked to stop. Not an Exception, so no handler of
    library code swallows it; not a KeyboardInterrupt, so click does not turn
    it into its own "Aborted!"."""


def request_stop(signal_number: int, _frame=None) -> None:
    """The SIGINT/SIGTERM handler."""
    global _stop_signal, _signals_seen
    _signals_seen += 1
    if _stop_signal is not None:
        return  # already stopping
    _stop_signal = signal_number
    if not _deferring:
        raise Interrupted(f"signal {signal_number}")


def install_stop_handlers() -> None:
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)


def stop_requested() -> int | None:
    return _stop_signal


def check_stop() -> None:
    """Raise Interrupted if a signal came (a handler's raise can be lost
    inside a callback; writers check between chunks)."""
    if _stop_signal is not None:
        raise Interrupted(f"signal {_stop_signal}")


class uninterruptible:  # noqa: N801  (used as a context manager, named like one)
    """A step no signal cuts in half; with `reraise`, a signal that came
    meanwhile is raised once the step is complete. (A class, not
    contextlib's decorator: this module is imported before anything else.)"""

    def __init__(self, reraise: bool = True):
        import threading

        self.reraise = reraise
        # signals are handled in the main thread only
        self.counted = threading.current_thread() is threading.main_thread()

    def __enter__(self) -> None:
        global _deferring
        if self.counted:
            _deferring += 1

    def __exit__(self, kind, value, traceback) -> None:
        global _deferring
        if not self.counted:
            return
        _deferring -= 1
        if kind is None and self.reraise and not _deferring:
            check_stop()


def record_committed(destinations) -> None:
    _committed.extend(destinations)


def forget_committed_outputs() -> None:
    """Start a new command's record (the CLI calls this before each command)."""
    _committed.clear()


def interruption() -> tuple[int, str]:
    """The exit code and the line that says what an interruption left."""
    code, what = (143, "terminated") if _stop_signal == signal.SIGTERM else (130, "interrupted")
    if _committed:  # the signal came after the outputs were renamed into place
        return code, f"{what} after writing {', '.join(_committed)}"
    return code, f"{what}; nothing was written"


def pause_point(step: str) -> None:
    """A test hook: when BLOBCAST_PAUSE_AT lists `step` (comma-separated) and
    BLOBCAST_PAUSE_DIR names a folder, create a file named `step` there and
    wait, at most 60 s, for a signal; once per step. Without both variables:
    nothing."""
    steps, folder = os.environ.get("BLOBCAST_PAUSE_AT"), os.environ.get("BLOBCAST_PAUSE_DIR")
    if not steps or not folder or step not in steps.split(",") or step in _paused:
        return
    _paused.add(step)
    import time

    seen = _signals_seen
    with open(os.path.join(folder, step), "w"):
        pass
    deadline = time.monotonic() + 60
    while _signals_seen == seen and time.monotonic() < deadline:
        time.sleep(0.005)
