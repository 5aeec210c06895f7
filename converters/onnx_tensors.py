"""The tensors of an ONNX file, wherever they sit (initializers, node
attributes, subgraphs, functions, training graphs), and their external data:
every location confined to the model's folder and checked before anything
is read; nothing resolved against the working directory."""

from __future__ import annotations

import os

import numpy as np
from onnx import SparseTensorProto, TensorProto, helper, numpy_helper

from blobcast.errors import FormatError
from blobcast.fileio import check_regular_file
from blobcast.limits import check_allocation
from blobcast.tensor import FileBytes, LazyTensor

from .mapping import MappedOnUse

NUMPY_OF = {TensorProto.FLOAT: np.dtype("<f4"), TensorProto.DOUBLE: np.dtype("<f8"),
             TensorProto.INT64: np.dtype("<i8"), TensorProto.INT32: np.dtype("<i4"),
             TensorProto.FLOAT16: np.dtype("<f2"), TensorProto.UINT8: np.dtype("u1"),
             TensorProto.INT8: np.dtype("i1"), TensorProto.BOOL: np.dtype("?")}


def _resolve_location(model_path: str, location: str) -> str:
    folder = os.path.realpath(os.path.dirname(os.path.abspath(model_path)))
    if os.path.isabs(location):
        raise FormatError(f"external data location {location!r} is an absolute path; it must "
                          "lie inside the model's folder", model_path)
    target = os.path.realpath(os.path.join(folder, location))
    if os.path.commonpath([folder, target]) != folder:
        raise FormatError(f"external data location {location!r} points outside the model's "
                          "folder", model_path)
    if not os.path.lexists(target):
        raise FormatError(f"external data file {location!r} is missing", model_path)
    try:
        check_regular_file(target)
    except FormatError as error:
        raise FormatError(f"external data file {location!r} {error.problem}", model_path) from None
    return target


def tensor_layout(tensor: TensorProto, path: str, where: str | None = None
            ) -> tuple[np.dtype, tuple[int, ...], int]:
    """A tensor's dtype, shape and value count."""
    dtype = NUMPY_OF.get(tensor.data_type)
    if dtype is None:
        raise FormatError(f"{where or f'initializer {tensor.name!r}'} has an unsupported type", path)
    if any(d < 0 for d in tensor.dims):
        raise FormatError(f"{where or f'initializer {tensor.name!r}'} has a negative dimension", path)
    shape = tuple(int(d) for d in tensor.dims)
    return dtype, shape, int(np.prod(shape))


def _external_span(tensor: TensorProto, model_path: str, where: str):
    """(file, offset, dtype, shape, count) of a tensor's external data, checked:
    inside the model's folder, a regular file, long enough."""
    info = {entry.key: entry.value for entry in tensor.external_data}
    dtype, shape, count = tensor_layout(tensor, model_path, where)
    path = _resolve_location(model_path, info.get("location", ""))
    try:
        offset = int(info.get("offset", 0))
        length = int(info.get("length", count * dtype.itemsize))
    except ValueError:
        raise FormatError(f"{where}: bad external data offset or length", model_path) from None
    if length != count * dtype.itemsize:
        raise FormatError(f"{where}: external data length {length} does not fit "
                          f"shape {list(shape)}", model_path)
    if offset < 0 or offset + length > os.path.getsize(path):
        raise FormatError(f"{where}: external data runs past the end of "
                          f"{os.path.basename(path)} (truncated?)", model_path)
    return path, offset, dtype, shape, count


class ExternalFiles:
    """External data files, each mapped once however many tensors it holds
    (a mapping per tensor would hold a file descriptor each)."""

    def __init__(self):
        self._maps: dict[str, object] = {}

    def buffer(self, path: str):
        if path not in self._maps:
            from .mapping import map_file

            self._maps[path] = map_file(path)
        return self._maps[path]


def external_tensor(tensor: TensorProto, model_path: str, files: ExternalFiles | None = None,
                    where: str | None = None) -> LazyTensor | np.ndarray:
    where = where or f"initializer {tensor.name!r}"
    path, offset, dtype, shape, count = _external_span(tensor, model_path, where)
    files = files or ExternalFiles()
    if count == 0:
        return np.zeros(shape, dtype)
    if dtype.kind != "f":
        return np.frombuffer(files.buffer(path), dtype=dtype, count=count,
                             offset=offset).reshape(shape).copy()
    return LazyTensor(shape, dtype, lambda: np.frombuffer(files.buffer(path), dtype=dtype, count=count,
                                                          offset=offset).reshape(shape),
                      f"{model_path}:{tensor.name}",
                      FileBytes(MappedOnUse(lambda: files.buffer(path)), offset))


def _graph_items(graph, where: str):
    """(where, TensorProto or SparseTensorProto) for each tensor a graph holds."""
    for tensor in graph.initializer:
        yield f"{where}initializer {tensor.name!r}", tensor
    for sparse in graph.sparse_initializer:
        yield f"{where}sparse initializer {sparse.values.name!r}", sparse
    for node in graph.node:
        yield from _node_items(node, f"{where}node {node.name or node.op_type!r} ")


def _node_items(node, where: str):
    for attribute in node.attribute:
        place = f"{where}attribute {attribute.name!r}"
        if attribute.HasField("t"):
            yield place, attribute.t
        for tensor in attribute.tensors:
            yield place, tensor
        if attribute.HasField("sparse_tensor"):
            yield place, attribute.sparse_tensor
        for item in attribute.sparse_tensors:
            yield place, item
        if attribute.HasField("g"):
            yield from _graph_items(attribute.g, place + " subgraph ")
        for graph in attribute.graphs:
            yield from _graph_items(graph, place + " subgraph ")


def _model_items(model):
    if model.HasField("graph"):
        yield from _graph_items(model.graph, "")
    for function in model.functions:
        for node in function.node:
            yield from _node_items(node, f"function {function.name!r} node {node.name or node.op_type!r} ")
    for index, info in enumerate(model.training_info):
        yield from _graph_items(info.initialization, f"training_info {index} initialization ")
        yield from _graph_items(info.algorithm, f"training_info {index} algorithm ")


def _dense(items):
    """Each sparse tensor as its values and its indices (TensorProtos)."""
    for where, item in items:
        if isinstance(item, SparseTensorProto):
            yield where, item.values
            yield f"{where} indices", item.indices
        else:
            yield where, item


def node_tensors(node, where: str):
    yield from _dense(_node_items(node, where))


def all_tensors(model):
    """(where, TensorProto) for every tensor a model holds, wherever it sits:
    initializers, node attributes, subgraphs, functions, training graphs."""
    yield from _dense(_model_items(model))


def check_sparse_sizes(model, path: str) -> None:
    """Charge every sparse tensor at its dense size, all together, before
    anything gets them: a runtime densifies them (a few bytes of indices can
    stand for gigabytes of zeros)."""
    total = 0
    for where, item in _model_items(model):
        if isinstance(item, SparseTensorProto):
            if any(d < 0 for d in item.dims):
                raise FormatError(f"{where} has a negative dimension", path)
            dtype = NUMPY_OF.get(item.values.data_type, np.dtype("<f8"))
            total += int(np.prod([int(d) for d in item.dims], dtype=object)) * dtype.itemsize
    check_allocation(total, "the sparse tensors at their dense size", path)


def check_external_data(model, path: str) -> set[str]:
    """Check every external data reference of a model before anything reads
    one; return the files they name."""
    files = set()
    for where, tensor in all_tensors(model):
        if tensor.data_location == TensorProto.EXTERNAL:
            files.add(_external_span(tensor, path, where)[0])
    return files


def tensor_value(tensor: TensorProto, model_path: str, where: str) -> np.ndarray:
    """A TensorProto's values (a Constant's, say); external data confined as
    for initializers, never resolved against the working directory."""
    if tensor.data_location == TensorProto.EXTERNAL:
        return np.asarray(external_tensor(tensor, model_path, where=where))
    try:
        return numpy_helper.to_array(tensor)
    except Exception as error:
        raise FormatError(f"{where} cannot be read ({error})", model_path) from error


SHAPE_VALUES = 64  # integer tensors this small are shape arithmetic: shape inference gets their values


def inferred_bytes(value, default_itemsize: int) -> int | None:
    """Bytes of a ValueInfoProto whose shape inference fixed every dimension,
    else None."""
    tensor_type = value.type.tensor_type
    dims = tensor_type.shape.dim
    if not tensor_type.HasField("shape") or any(not d.HasField("dim_value") for d in dims):
        return None
    count = 1
    for d in dims:
        count *= d.dim_value
    element = tensor_type.elem_type
    return count * (helper.tensor_dtype_to_np_dtype(element).itemsize if element else default_itemsize)
