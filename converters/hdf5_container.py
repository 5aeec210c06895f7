"""The HDF5 container, apart from any layout on it: files opened guarded
(hdf5_guard.py: hard links and in-file storage only, bounded walks),
datasets read as lazy tensors sized before anything is read, strings
stored fixed-length, datasets written aligned with their values copied
file to file, and a listing of what a file holds. Caffe's layouts
(caffe_hdf5.py, solverstate.py) sit on top and say what the groups mean.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import h5py
import numpy as np

from blobcast.errors import FormatError
from blobcast.tensor import FileBytes, LazyTensor

from .hdf5_guard import check_storage, child, members, open_hdf5, walk_groups
from .mapping import copy_file_bytes

__all__ = ["HDF5_MAGIC", "DatasetWriter", "FileMap", "check_storage", "child", "float_tensor",
           "listing", "members", "open_hdf5", "string_dataset", "walk_groups", "write_string",
           "written_file"]

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


class FileMap:
    """The whole file memory-mapped once, on first use."""

    def __init__(self, path: str):
        self.path = path
        self._buf = None

    def __call__(self):
        if self._buf is None:
            from .mapping import map_file

            self._buf = map_file(self.path)
        return self._buf

    def fileno(self) -> int:
        return self().fileno()


def _contiguous_offset(dataset: h5py.Dataset, path: str, where: str) -> int | None:
    """Where the dataset's values start in the file, when they lie there in
    one piece (checked to end inside the file); None otherwise."""
    offset = dataset.id.get_offset()
    if dataset.chunks is not None or offset is None or dataset.size == 0:
        return None
    if offset + dataset.size * dataset.dtype.itemsize > os.path.getsize(path):
        raise FormatError(f"{where} claims {dataset.size * dataset.dtype.itemsize} bytes that run "
                          "past the end of the file (truncated?)", path)
    return offset


def float_tensor(dataset, path: str, where: str, file_map: FileMap | None = None,
                 copied: list | None = None, expected: str = "only floats are read") -> LazyTensor:
    """A float dataset's values as a lazy tensor: a view of `file_map` (the
    whole file, mapped once) where they lie contiguously, else read when
    asked (then its size is added to the list `copied`, for the memory
    budget). Its storage is checked before anything is read."""
    if not isinstance(dataset, h5py.Dataset):
        raise FormatError(f"{where} is not a dataset", path)
    dtype = dataset.dtype
    if dtype.kind != "f":
        raise FormatError(f"{where} holds {dtype} values; {expected}", path)
    check_storage(dataset, path, where)
    shape = dataset.shape
    target = np.dtype("<f8") if dtype.itemsize == 8 else np.dtype("<f4")
    offset = _contiguous_offset(dataset, path, where)
    if offset is not None and dtype == target and file_map is not None:
        # Zero-copy: the values lie contiguously in the file; view them. One
        # mapping serves every dataset (one per dataset would hold one file
        # descriptor each).
        def load(buf=file_map, offset=offset, shape=shape, dtype=target, count=dataset.size):
            return np.frombuffer(buf(), dtype=dtype, count=count, offset=offset).reshape(shape)

        return LazyTensor(shape, target, load, f"{path}:{where}", FileBytes(file_map, offset))
    if copied is not None:
        copied.append(dataset.size * target.itemsize)

    def read(dataset=dataset, target=target):
        return np.asarray(dataset[()], dtype=target).reshape(dataset.shape)

    return LazyTensor(shape, target, read, f"{path}:{where}")


def string_dataset(handle: h5py.Group, name: str, path: str) -> str | None:
    """A scalar fixed-length UTF-8 string dataset, or None where absent."""
    dataset = child(handle, name, path)
    if dataset is None:
        return None
    if not isinstance(dataset, h5py.Dataset) or dataset.shape != ():
        raise FormatError(f"/{name} is not a single string", path)
    info = h5py.check_string_dtype(dataset.dtype)
    if info is None:
        raise FormatError(f"/{name} is not a string", path)
    if info.length is None:
        # Variable-length strings live in HDF5's global heap, where a damaged
        # file can make the library loop forever; blobcast writes fixed-length.
        raise FormatError(f"/{name} is a variable-length string; blobcast writes (and "
                          "reads) a fixed-length one", path)
    check_storage(dataset, path, f"/{name}")
    text = dataset[()]
    try:
        text = text.decode("utf-8") if isinstance(text, bytes) else str(text)
    except UnicodeDecodeError as error:
        raise FormatError(f"/{name} is not valid UTF-8", path) from error
    return text.rstrip("\0")


def write_string(handle: h5py.Group, name: str, text: str) -> None:
    raw = text.encode("utf-8")
    # Fixed-length, so the text lies in the dataset itself: variable-length
    # strings live in HDF5's global heap, where a damaged file can make the
    # HDF5 library loop forever.
    string_type = h5py.string_dtype("utf-8", max(len(raw), 1))
    handle.create_dataset(name, data=np.array(raw, dtype=string_type), dtype=string_type)


class DatasetWriter:
    """Datasets written into an open file; a tensor whose bytes lie in
    another file gets its space only, at a fixed place, and its values are
    copied file to file once the file is closed (`copy_values`)."""

    def __init__(self, progress=None):
        self.progress = progress
        self._copies: list = []  # (offset, tensor)

    def add(self, group: h5py.Group, name: str, tensor, filters: dict) -> None:
        file_bytes = getattr(tensor, "file_bytes", None)
        if file_bytes is None or filters or not tensor.shape or not tensor.size:
            group.create_dataset(name, data=tensor.numpy(), **filters)
            if self.progress is not None:
                self.progress(tensor.nbytes)
            return
        plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        plist.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        plist.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
        space = h5py.h5s.create_simple(tensor.shape)
        kind = h5py.h5t.py_create(tensor.dtype)
        dataset = h5py.h5d.create(group.id, name.encode(), kind, space, dcpl=plist)
        self._copies.append((dataset.get_offset(), tensor))

    def copy_values(self, path: str) -> None:
        if not self._copies:
            return
        with open(path, "r+b") as output:
            for offset, tensor in self._copies:
                copy_file_bytes(output.fileno(), offset, tensor)
                if self.progress is not None:
                    self.progress(tensor.nbytes)


@contextmanager
def written_file(path: str, progress=None):
    """A new HDF5 file to fill through the DatasetWriter it yields. Values of
    4 KiB and more start on 64-byte boundaries, so the engine can use them in
    place (BLAS is slower on misaligned operands)."""
    writer = DatasetWriter(progress)
    with h5py.File(path, "w", alignment_threshold=4096, alignment_interval=64) as handle:
        yield handle, writer
    writer.copy_values(path)


def _entry(group: h5py.Group, name: str, prefix: str) -> dict:
    link = group.get(name, getlink=True)
    entry = {"path": f"{prefix}/{name}"}
    if not isinstance(link, h5py.HardLink):
        target = getattr(link, "path", "")
        where = getattr(link, "filename", "")
        entry.update(kind="link", target=f"{where}:{target}" if where else target)
        return entry
    item = group[name]
    if isinstance(item, h5py.Dataset):
        entry.update(kind="dataset", shape=list(item.shape), dtype=str(item.dtype),
                     compression=item.compression)
    else:
        entry["kind"] = "group" if isinstance(item, h5py.Group) else "other"
    return entry


def listing(path: str) -> list[dict]:
    """Every group and dataset in the file, like `h5ls -r` (links are listed,
    never followed)."""
    handle = open_hdf5(path)
    groups = [("", handle)] + [("/" + name, group) for name, group in walk_groups(handle, path)]
    return [_entry(group, name, prefix) for prefix, group in groups for name in group.keys()]
