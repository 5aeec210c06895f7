"""The inputs a net is run on: shapes or .npy files from --input, seeded
random values, and the headers of array files checked before they are read."""

from __future__ import annotations

import os

import numpy as np

from ..errors import BlobcastError
from ..fileio import check_regular_file
from ..limits import check_allocation
from .runner import Runner


def parse_input_spec(spec: str, option: str = "--input") -> tuple[str, np.ndarray | list[int]]:
    """NAME=d1,d2,... (a shape, filled with seeded random values) or NAME=file.npy."""
    if "=" not in spec:
        raise BlobcastError(f"{option} {spec!r}: write NAME=SHAPE (e.g. data=1,3,224,224) or "
                            "NAME=file.npy")
    name, value = spec.split("=", 1)
    if value.endswith(".npy"):
        return name, read_npy(value)
    parts = [d.strip() for d in value.replace("x", ",").split(",")]
    if not all(d.isdigit() for d in parts):
        raise BlobcastError(f"{option} {spec!r}: the shape must be whole numbers like 1,3,224,224 "
                            "(or 1x3x224x224)")
    shape = [int(d) for d in parts]
    if any(d <= 0 for d in shape):
        raise BlobcastError(f"{option} {spec!r}: every dimension must be positive")
    return name, shape


def make_inputs(declared: dict[str, list[int] | None], given: dict, seed: int,
                unknown=None) -> dict:
    """Input arrays: given arrays as they are, shapes (given or declared) filled
    with normal(0, 1) float32 values from a seeded generator, in input order.
    `unknown(name)`, when given, makes the error for an input of unknown shape
    (an engine Net's names the data layer behind it)."""
    from ..shapes import check_input_size

    rng = np.random.RandomState(seed)
    inputs = {}
    for name in declared:
        value = given.get(name, declared[name])
        if value is None:
            if unknown is not None:
                raise unknown(name)
            raise BlobcastError(f"the net input {name!r} has no declared shape; give one with "
                                f"--input {name}=SHAPE or --input {name}=file.npy")
        if isinstance(value, np.ndarray):
            inputs[name] = value
        else:
            check_input_size(name, value)
            inputs[name] = rng.standard_normal(tuple(value)).astype(np.float32)
    unknown = set(given) - set(declared)
    if unknown:
        raise BlobcastError("the net has no input named " + ", ".join(sorted(unknown)))
    return inputs


def runner_inputs(runner: Runner, given: dict, seed: int) -> dict:
    """make_inputs for a runner's inputs; the runner's shape_unknown (the
    engine's names the data layer behind the input) makes the error for an
    input whose shape is unknown."""
    return make_inputs(runner.inputs, given, seed, unknown=runner.shape_unknown)


def input_shapes(values: dict) -> dict:
    """--input values (a shape, or an array of values) -> name: shape."""
    return {name: list(value.shape) if isinstance(value, np.ndarray) else list(value)
            for name, value in values.items()}


MAX_NPZ_ENTRIES = 100_000
RECORDED_INPUTS = "__blobcast_inputs__"  # the .npz entry `run --save` lists the inputs in


def _npy_header(handle, where: str, path: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, bytes of values) from a .npy header, nothing else read."""
    try:
        version = np.lib.format.read_magic(handle)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read_header(handle)
    except (ValueError, OSError, SyntaxError) as error:
        raise BlobcastError(f"{where}: not a readable .npy array ({error})", path) from error
    if dtype.hasobject:
        raise BlobcastError(f"{where}: holds Python objects; refused", path)
    count = 1
    for d in shape:
        count *= int(d)
    return tuple(shape), dtype, count * dtype.itemsize


# Array kinds a net's input or a recorded blob may have: booleans, integers and
# floats of up to 64 bits. Complex, extended-precision, structured, datetime,
# string values would be cast (losing parts of them) or fail deep in a run.
_NUMERIC_KINDS = "biuf"


def _check_numeric(dtype: np.dtype, where: str, path: str) -> None:
    if dtype.kind not in _NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype is not None \
            or (dtype.kind == "f" and dtype.itemsize > 8):
        raise BlobcastError(f"{where}: holds {_dtype_words(dtype)} values; only booleans, integers "
                            "and floats of up to 64 bits are taken", path)


def _dtype_words(dtype: np.dtype) -> str:
    if dtype.fields is not None:
        return "structured"
    if dtype.subdtype is not None:
        return "sub-array"
    words = {"c": "complex", "M": "datetime", "m": "timedelta", "U": "text", "S": "bytes",
             "V": "raw (void)"}
    return words.get(dtype.kind, f"{dtype.itemsize * 8}-bit float" if dtype.kind == "f" else str(dtype))


def read_npy(path: str) -> np.ndarray:
    """A .npy file, its header checked against the file's size and the memory
    budget before the values are read."""
    check_regular_file(path, BlobcastError)
    with open(path, "rb") as handle:
        shape, dtype, nbytes = _npy_header(handle, "the array", path)
        _check_numeric(dtype, "the array", path)
        available = os.fstat(handle.fileno()).st_size - handle.tell()
    if nbytes > available:
        raise BlobcastError(f"the header declares {nbytes} bytes of values but the file holds "
                            f"{available}", path)
    check_allocation(nbytes, "the array", path)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise BlobcastError(f"not a readable .npy file ({error})", path) from error


def check_npz(path: str) -> None:
    """Every member's declared size, from the zip directory and each .npy
    header, within the file's bounds and the memory budget: no zip bomb."""
    import zipfile

    check_regular_file(path, BlobcastError)
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if len(members) > MAX_NPZ_ENTRIES:
                raise BlobcastError(f"holds {len(members)} entries; at most {MAX_NPZ_ENTRIES} "
                                    "are read", path)
            total = 0
            for member in members:
                with archive.open(member) as handle:
                    _, dtype, nbytes = _npy_header(handle, member.filename, path)
                if member.filename != f"{RECORDED_INPUTS}.npy":  # that one: the input names
                    _check_numeric(dtype, member.filename, path)
                if nbytes > member.file_size:
                    raise BlobcastError(f"{member.filename}: the header declares {nbytes} bytes "
                                        f"but the entry holds {member.file_size}", path)
                total += member.file_size
            check_allocation(total, "the recorded blobs", path)
    except zipfile.BadZipFile as error:
        raise BlobcastError(f"not a readable .npz file ({error})", path) from error
