"""Caffe's HDF5 snapshot (.caffemodel.h5): Caffe's layout on the HDF5
container (hdf5_container.py, which knows nothing of it).

Layout (Net::ToHDF5): /data/<layer name>/<blob index> for each parameter its
layer owns, a group for every layer, and /diff/... likewise when gradients are
stored. blobcast also stores the architecture as a prototxt string in
/architecture (Caffe ignores it), so its files are self-contained.
"""

from __future__ import annotations

import warnings

import h5py
import numpy as np
from google.protobuf.message import DecodeError

from blobcast.errors import BlobcastWarning, FormatError
from blobcast.limits import check_allocation
from blobcast.model import Blob, Layer, Model
from blobcast.modules import apply_modules_json, modules_json
from blobcast.weights import WeightSource, attach_weights

from . import caffe_pb2 as pb
from .caffe_net import architecture_pb, model_from_net
from .hdf5_container import (
    HDF5_MAGIC,
    FileMap,
    check_storage,
    child,
    float_tensor,
    members,
    open_hdf5,
    string_dataset,
    walk_groups,
    write_string,
    written_file,
)
from .prototxt import architecture_text, has_unknown_fields, net_from_text

NAME = "caffemodel-h5"
SUFFIXES = (".caffemodel.h5", ".h5", ".hdf5")
DESCRIPTION = "a Caffe HDF5 snapshot (Net::ToHDF5 layout)"
HOLDS = frozenset({"architecture", "weights", "diffs"})  # the architecture when blobcast wrote it
MAGIC = HDF5_MAGIC
ARCHITECTURE = "architecture"
ARCHITECTURE_BINARY = "architecture_pb"  # present only when text cannot hold everything
MODULES = "modules"  # JSON: module instances and each layer's path (blobcast.modules)


def _dataset_tensor(dataset, path: str, where: str, file_map=None, copied=None):
    return float_tensor(dataset, path, where, file_map, copied, expected="Caffe stores floats")


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
    text = string_dataset(handle, ARCHITECTURE, path)
    if text is None:
        return None
    return net_from_text(text, f"{path}:/{ARCHITECTURE}")


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
    record = string_dataset(handle, MODULES, path) if architecture is None else None
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
    with written_file(path, progress) as (handle, datasets):
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
                datasets.add(group, str(j), blob.data, filters)
                if diff_group is not None and blob.diff is not None:
                    datasets.add(diff_group, str(j), blob.diff, filters)
        if model.has_architecture:
            _write_architecture(handle, model)


def _write_architecture(handle: h5py.File, model: Model) -> None:
    write_string(handle, ARCHITECTURE, architecture_text(model))
    handle[ARCHITECTURE].attrs["format"] = np.bytes_(b"caffe.NetParameter text (prototxt), blobs omitted")
    record = modules_json(model)
    if record is not None:  # which layers came from which module instance
        write_string(handle, MODULES, record)
    if has_unknown_fields(model):
        raw = architecture_pb(model).SerializeToString()
        handle.create_dataset(ARCHITECTURE_BINARY, data=np.frombuffer(raw, np.uint8))
