"""Caffe's HDF5 snapshot (.caffemodel.h5), read and written in Caffe's layout.

Layout (Net::ToHDF5): /data/<layer name>/<blob index> for each parameter its
layer owns, a group for every layer, and /diff/... likewise when gradients are
stored. blobcast also stores the architecture as a prototxt string in
/architecture (Caffe ignores it), so its files are self-contained.
"""

from __future__ import annotations

import os
import warnings

import h5py
import numpy as np
from google.protobuf.message import DecodeError

from blobcast.errors import BlobcastWarning, FormatError
from blobcast.limits import check_allocation
from blobcast.model import Blob, Layer, Model
from blobcast.modules import apply_modules_json, modules_json
from blobcast.tensor import FileBytes, LazyTensor
from blobcast.weights import WeightSource, attach_weights

from . import caffe_pb2 as pb
from .caffe_net import architecture_pb, model_from_net
from .hdf5_guard import check_storage, child, members, open_hdf5, walk_groups
from .mapping import copy_file_bytes
from .prototxt import architecture_text, has_unknown_fields, net_from_text

NAME = "caffemodel-h5"
SUFFIXES = (".caffemodel.h5", ".h5", ".hdf5")
DESCRIPTION = "a Caffe HDF5 snapshot (Net::ToHDF5 layout)"
HOLDS = frozenset({"architecture", "weights", "diffs"})  # the architecture when blobcast wrote it
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
MAGIC = HDF5_MAGIC
ARCHITECTURE = "architecture"
ARCHITECTURE_BINARY = "architecture_pb"  # present only when text cannot hold everything
MODULES = "modules"  # JSON: module instances and each layer's path (blobcast.modules)


def _dataset_tensor(dataset, path: str, where: str, file_map=None, copied=None) -> LazyTensor:
    """A dataset's values as a lazy tensor: a view of `file_map` (the whole
    file, mapped once) where they lie contiguously, else read when asked
    (then its size is added to the list `copied`, for the memory budget)."""
    if not isinstance(dataset, h5py.Dataset):
        raise FormatError(f"{where} is not a dataset", path)
    dtype = dataset.dtype
    if dtype.kind != "f":
        raise FormatError(f"{where} holds {dtype} values; Caffe stores floats", path)
    check_storage(dataset, path, where)
    shape = dataset.shape
    target = np.dtype("<f8") if dtype.itemsize == 8 else np.dtype("<f4")
    offset = dataset.id.get_offset()
    contiguous = dataset.chunks is None and offset is not None and dataset.size > 0
    if contiguous:
        needed = offset + dataset.size * dtype.itemsize
        if needed > os.path.getsize(path):
            raise FormatError(f"{where} claims {dataset.size * dtype.itemsize} bytes that run past "
                              "the end of the file (truncated?)", path)
    if contiguous and dtype == target and file_map is not None:
        # Zero-copy: the values lie contiguously in the file; view them. One
        # mapping serves every dataset (one per dataset would hold one file
        # descriptor each).
        def load(buf=file_map, offset=offset, shape=shape, dtype=target, count=dataset.size):
            return np.frombuffer(buf(), dtype=dtype, count=count, offset=offset).reshape(shape)

        return LazyTensor(shape, target, load, f"{path}:{where}", FileBytes(file_map, offset))
    else:
        if copied is not None:
            copied.append(dataset.size * target.itemsize)

        def load(dataset=dataset, target=target):
            return np.asarray(dataset[()], dtype=target).reshape(dataset.shape)
    return LazyTensor(shape, target, load, f"{path}:{where}")


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


def _blobs_in(group: h5py.Group, diff_group, path: str, layer_name: str, file_map,
              copied: list) -> dict[int, Blob]:
    blobs = {}
    for key, item in members(group, path):
        if not isinstance(item, h5py.Dataset):
            if isinstance(item, h5py.Group):
                continue  # a nested layer ('/' in its name), walked on its own
            raise FormatError(f"/data/{layer_name}/{key} is neither a group nor a dataset", path)
        if not key.isdigit():
            raise FormatError(f"/data/{layer_name}/{key}: blob datasets are named 0, 1, 2, ...", path)
        where = f"/data/{layer_name}/{key}"
        data = _dataset_tensor(item, path, where, file_map, copied)
        diff = None
        diff_item = child(diff_group, key, path) if diff_group is not None else None
        if diff_item is not None:
            diff = _dataset_tensor(diff_item, path, f"/diff/{layer_name}/{key}", file_map, copied)
            if diff.shape != data.shape:
                raise FormatError(f"/diff/{layer_name}/{key} has shape {list(diff.shape)} but "
                                  f"its data has {list(data.shape)}", path)
        blobs[int(key)] = Blob(data, diff)
    return blobs


def _not_a_snapshot(handle: h5py.File, path: str) -> FormatError:
    names = sorted(handle.keys())
    if {"iter", "history"} & set(names):
        return FormatError("this is a Caffe solver state, not a model; name it "
                           ".solverstate.h5 (or pass --from solverstate-h5)", path)
    hint = ""
    if "model_weights" in names or "keras_version" in handle.attrs:
        hint = " (it looks like a Keras model)"
    listed = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    return FormatError(f"not a Caffe HDF5 snapshot: no /data group; top level has "
                       f"[{listed}]{hint}", path)


def _architecture(handle: h5py.File, path: str) -> Model | None:
    binary = child(handle, ARCHITECTURE_BINARY, path)
    if binary is not None:
        if not isinstance(binary, h5py.Dataset) or binary.dtype != np.uint8 or binary.ndim != 1:
            raise FormatError(f"/{ARCHITECTURE_BINARY} is not a byte array", path)
        check_storage(binary, path, f"/{ARCHITECTURE_BINARY}")
        raw = bytes(np.asarray(binary[()]).tobytes())
        try:
            net = pb.NetParameter.FromString(raw)
        except DecodeError as error:
            raise FormatError(f"/{ARCHITECTURE_BINARY} is not a NetParameter ({error})", path) from error
        return model_from_net(net, [[] for _ in net.layer], source_format=NAME,
                              source_version="V2", notes=[], path=path)
    text = _string_dataset(handle, ARCHITECTURE, path)
    if text is None:
        return None
    return net_from_text(text, f"{path}:/{ARCHITECTURE}")


def _string_dataset(handle: h5py.File, name: str, path: str) -> str | None:
    """A scalar fixed-length UTF-8 string dataset blobcast wrote, or None."""
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


def read_sources(handle: h5py.File, path: str) -> list[WeightSource]:
    data = child(handle, "data", path)
    if not isinstance(data, h5py.Group):
        raise _not_a_snapshot(handle, path)
    diff_root = child(handle, "diff", path)
    file_map = FileMap(path)
    sources = []
    copied: list[int] = []
    for name, group in walk_groups(data, path):
        diff_group = None
        if isinstance(diff_root, h5py.Group):
            diff_group = diff_root
            for part in name.split("/"):
                diff_group = child(diff_group, part, path)
                if not isinstance(diff_group, h5py.Group):
                    diff_group = None
                    break
        sources.append(WeightSource(name, _blobs_in(group, diff_group, path, name, file_map,
                                                    copied)))
    check_allocation(sum(copied), "reading the datasets that are not stored plainly", path)
    return sources


def read(path: str, *, architecture: Model | None = None, **_options) -> Model:
    handle = open_hdf5(path)
    sources = read_sources(handle, path)
    embedded = _architecture(handle, path)
    model = architecture or embedded
    if model is None:
        # Caffe's own files hold only names and values.
        model = Model(has_architecture=False, source_format=NAME)
        for source in sources:
            count = max(source.blobs, default=-1) + 1
            model.layers.append(Layer(name=source.name, blobs=[source.blobs.get(j)
                                                                for j in range(count)]))
        if any(None in layer.blobs for layer in model.layers):
            model.notes.append("some layers lack a blob index: shared parameters stored "
                               "under their owner; give --prototxt to link them")
        return model
    attach_weights(model, sources, weights_path=path, absent_shared_ok=True,
                   check_definitions=architecture is not None)
    record = _string_dataset(handle, MODULES, path) if architecture is None else None
    if record is not None:
        try:
            apply_modules_json(model, record)
        except ValueError as error:
            raise FormatError(f"/{MODULES}: {error}", path) from None
    model.source_format = NAME
    return model


def _check_names(model: Model, path: str) -> None:
    unnamed = [str(i) for i, layer in enumerate(model.layers) if not layer.name]
    if unnamed:  # Caffe's Net::ToHDF5 fails on them too
        raise FormatError(f"layer(s) #{', #'.join(unnamed[:5])} have no name; an HDF5 snapshot "
                          "keeps each layer's blobs in a group named after it", path)
    duplicates = model.duplicate_layer_names()
    if duplicates:
        raise FormatError("duplicate layer names cannot share one HDF5 group: "
                          + ", ".join(duplicates), path)
    slashed = [layer.name for layer in model.layers if "/" in layer.name]
    if slashed:
        warnings.warn(
            f"{path}: layer names with '/' are stored as nested HDF5 groups, which Caffe's "
            f"HDF5 loader cannot read ({', '.join(slashed[:5])}"
            f"{', ...' if len(slashed) > 5 else ''}); use .caffemodel for Caffe",
            BlobcastWarning, stacklevel=3)


def write(model: Model, path: str, *, compress: str | None = None, progress=None,
          **_options) -> None:
    _check_names(model, path)
    options = {}
    if compress:
        if compress != "gzip":
            raise FormatError(f"unknown compression {compress!r}; use gzip", path)
        options = {"compression": "gzip", "compression_opts": 4}
    owners = model.param_owners()
    copies = []  # (dataset, tensor): values copied file to file once the file is closed

    def add_dataset(group, name: str, tensor, filters: dict) -> None:
        file_bytes = getattr(tensor, "file_bytes", None)
        if file_bytes is None or filters or not tensor.shape or not tensor.size:
            group.create_dataset(name, data=tensor.numpy(), **filters)
            if progress is not None:
                progress(tensor.nbytes)
            return
        # Space only, at a fixed place in the file; the values follow below.
        plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        plist.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        plist.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
        space = h5py.h5s.create_simple(tensor.shape)
        kind = h5py.h5t.py_create(tensor.dtype)
        copies.append((h5py.h5d.create(group.id, name.encode(), kind, space, dcpl=plist).get_offset(),
                       tensor))

    # Values of 4 KiB and more start on 64-byte boundaries, so the engine can
    # use them in place (BLAS is slower on misaligned operands).
    with h5py.File(path, "w", alignment_threshold=4096, alignment_interval=64) as handle:
        data = handle.create_group("data")
        diff = handle.create_group("diff") if model.has_diff else None
        for li, layer in enumerate(model.layers):
            group = data.require_group(layer.name)
            diff_group = diff.require_group(layer.name) if diff is not None else None
            for j, blob in enumerate(layer.blobs):
                if blob is None or (li, j) in owners:
                    continue  # Net::ToHDF5 writes shared parameters under their owner only
                # HDF5 filters need chunked storage, which a 0-d dataset cannot have.
                filters = options if blob.shape and blob.data.size else {}
                add_dataset(group, str(j), blob.data, filters)
                if diff_group is not None and blob.diff is not None:
                    add_dataset(diff_group, str(j), blob.diff, filters)
        if model.has_architecture:
            _write_architecture(handle, model)
    if copies:
        with open(path, "r+b") as output:
            for offset, tensor in copies:
                copy_file_bytes(output.fileno(), offset, tensor)
                if progress is not None:
                    progress(tensor.nbytes)


def _write_string(handle: h5py.File, name: str, text: str) -> None:
    raw = text.encode("utf-8")
    # Fixed-length, so the text lies in the dataset itself: variable-length
    # strings live in HDF5's global heap, where a damaged file can make the
    # HDF5 library loop forever.
    string_type = h5py.string_dtype("utf-8", max(len(raw), 1))
    handle.create_dataset(name, data=np.array(raw, dtype=string_type), dtype=string_type)


def _write_architecture(handle: h5py.File, model: Model) -> None:
    _write_string(handle, ARCHITECTURE, architecture_text(model))
    handle[ARCHITECTURE].attrs["format"] = np.bytes_(b"caffe.NetParameter text (prototxt), blobs omitted")
    record = modules_json(model)
    if record is not None:  # which layers came from which module instance
        _write_string(handle, MODULES, record)
    if has_unknown_fields(model):
        raw = architecture_pb(model).SerializeToString()
        handle.create_dataset(ARCHITECTURE_BINARY, data=np.frombuffer(raw, np.uint8))


def hdf5_listing(path: str) -> list[dict]:
    """Every group and dataset in the file, like `h5ls -r` (links are listed,
    never followed)."""
    handle = open_hdf5(path)
    entries = []
    groups = [("", handle)] + [("/" + name, group) for name, group in walk_groups(handle, path)]
    for prefix, group in groups:
        for name in group.keys():
            link = group.get(name, getlink=True)
            entry = {"path": f"{prefix}/{name}"}
            if not isinstance(link, h5py.HardLink):
                target = getattr(link, "path", "")
                where = getattr(link, "filename", "")
                entry.update(kind="link", target=f"{where}:{target}" if where else target)
            else:
                item = group[name]
                if isinstance(item, h5py.Dataset):
                    entry.update(kind="dataset", shape=list(item.shape), dtype=str(item.dtype),
                                 compression=item.compression)
                elif isinstance(item, h5py.Group):
                    entry["kind"] = "group"
                else:
                    entry["kind"] = "other"
            entries.append(entry)
    return entries
