"""Reading and writing one file: its format found (the converters' registry),
read errors turned once into a one-line FormatError naming the file."""

from __future__ import annotations

import os

from .errors import BlobcastError, FormatError
from .model import Model
from .solver import SolverState


def converters():
    """The file-format code, which lives apart from the model and is
    imported on first use."""
    from . import converters as formats

    return formats


def reading(path: str, action):
    """Run a reader; turn any failure into a one-line FormatError naming the file."""
    try:
        return action()
    except BlobcastError:
        raise
    except MemoryError as error:
        raise FormatError("not enough memory to read it", path) from error
    except (OSError, ValueError, KeyError, TypeError, IndexError, OverflowError,
            RuntimeError, UnicodeError) as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise FormatError(f"cannot be read: {detail}", path) from error


def read_as(path: str, fmt, prototxt: str | None = None) -> Model | SolverState:
    """The file read as the format `fmt` (a record already detected), with
    the net definition at `prototxt` where given."""
    if prototxt is None:
        return reading(path, lambda: fmt.read(path))
    net_format = converters().detect_format(prototxt)
    if not net_format.architecture_only:
        raise FormatError("--prototxt takes a .prototxt net definition", prototxt)
    architecture = reading(prototxt, lambda: net_format.read(prototxt))
    return reading(path, lambda: fmt.read(path, architecture=architecture))


def load(path: str | os.PathLike, prototxt: str | os.PathLike | None = None,
         format: str | None = None) -> Model | SolverState:
    """Read a model (or solver state) from any supported file.

    With `prototxt`, the layers come from that net definition and the weights
    from `path`, matched by layer name as Caffe does.
    """
    path = os.fspath(path)
    fmt = converters().detect_format(path, format)
    return read_as(path, fmt, None if prototxt is None else os.fspath(prototxt))


def check_kind(obj, fmt, path: str) -> None:
    """A solver state goes only to a solver-state format, a model only to another."""
    is_state = isinstance(obj, SolverState)
    if is_state and not fmt.holds_solver_state:
        raise FormatError(f"a solver state cannot be written as {fmt.description}; use "
                          ".solverstate or .solverstate.h5", path)
    if not is_state and fmt.holds_solver_state:
        raise FormatError(f"a model cannot be written as {fmt.description}", path)


def write_as(obj, path: str, fmt, **options) -> None:
    """Write `obj` as the format `fmt`; a failed write names the file."""
    check_kind(obj, fmt, path)
    try:
        fmt.write(obj, path, **options)
    except BlobcastError:
        raise
    except OSError as error:
        raise FormatError(f"cannot be written: {error.strerror or error}", path) from error


def save(obj: Model | SolverState, path: str | os.PathLike, format: str | None = None, *,
         compress: str | None = None, progress=None, **options) -> None:
    """Write a model or solver state; the format comes from the suffix unless given.

    ONNX takes options: opset, input_shapes {name: shape}, dynamic_batch,
    external_data (None: automatic above 2 GB), strict and given_shapes
    {blob: shape} (the tops of layers whose shapes blobcast cannot tell).
    """
    path = os.fspath(path)
    fmt = converters().output_format(path, format)
    write_as(obj, path, fmt, compress=compress, progress=progress, **options)
