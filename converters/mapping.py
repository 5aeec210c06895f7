"""Read-only memory maps of input files: tensors view them in place."""

from __future__ import annotations

import mmap
import os
import weakref

from blobcast.errors import FormatError
from blobcast.fileio import open_regular


class MappedFile(mmap.mmap):
    """A read-only mapping that keeps its file open (`fileno()`), so a writer
    can copy a tensor's bytes from the file itself, in the kernel, instead of
    through the mapping's pages."""

    def fileno(self) -> int:
        return self._descriptor

    def close(self) -> None:
        super().close()
        self._finalizer()


def map_file(path: str) -> MappedFile:
    """Memory-map a file read-only (an empty file gets empty bytes)."""
    with open_regular(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            raise FormatError("the file is empty", path)
        mapping = MappedFile(handle.fileno(), 0, access=mmap.ACCESS_READ)
        mapping._descriptor = os.dup(handle.fileno())
        mapping._finalizer = weakref.finalize(mapping, os.close, mapping._descriptor)
        return mapping


def copy_file_bytes(destination: int, offset: int, tensor) -> None:
    """Write a tensor whose values lie in an input file (tensor.file_bytes)
    at `offset` of the open file `destination`: copied file to file in the
    kernel (as cp does), neither mapped nor read here; through the mapping
    where the kernel cannot copy between the two files."""
    source = tensor.file_bytes
    start, remaining, at = source.offset, tensor.nbytes, offset
    while remaining:
        try:
            done = os.copy_file_range(source.handle.fileno(), destination, remaining, start, at)
        except (AttributeError, OSError):  # no such call here, or not between these files
            view = memoryview(tensor.numpy()).cast("B")[tensor.nbytes - remaining:]
            while view:
                written = os.pwrite(destination, view, at)
                view, at = view[written:], at + written
            return
        if done == 0:
            raise FormatError(f"{tensor.source or 'a tensor'}: the input file ended before its "
                              "values did (was it changed while being read?)")
        start, at, remaining = start + done, at + done, remaining - done


class FileChunk:
    """A tensor's bytes as one chunk of an output file, copied from the input
    file that holds them (write_chunks copies; bytes() reads them)."""

    __slots__ = ("tensor",)

    def __init__(self, tensor):
        self.tensor = tensor

    def __len__(self) -> int:
        return self.tensor.nbytes

    def __bytes__(self) -> bytes:
        return self.tensor.numpy().tobytes()


class MappedOnUse:
    """The descriptor of a file mapped when first needed: `mapping()` gives
    the MappedFile (mapped once by whoever holds it)."""

    __slots__ = ("mapping",)

    def __init__(self, mapping):
        self.mapping = mapping

    def fileno(self) -> int:
        return self.mapping().fileno()
