"""ONNX models (.onnx): Caffe nets exported with Caffe's semantics, and ONNX
graphs imported back into Caffe layers where Caffe can express them.

Tensors over 2 GB in total go to external data in a companion file
`<model>.onnx.data` (ONNX's own limit is protobuf's 2 GB); external data is
read as memory-mapped views and may not point outside the model's folder.
"""

from __future__ import annotations

import os
import secrets
import warnings

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from blobcast.errors import BlobcastError, BlobcastWarning, FormatError
from blobcast.fileio import final_path
from blobcast.model import Model
from blobcast.modules import apply_modules_json, modules_json
from blobcast.tensor import FileBytes, LazyTensor

from .mapping import FileChunk, MappedFile
from .messages import fields_left_out
from .onnx_data_files import DATA_TOKEN_KEY, new_token, stale_data_remover
from .onnx_data_files import header as data_header
from .onnx_export import CUSTOM_DOMAIN, DEFAULT_OPSET, LAYER_ATTRIBUTE, build_graph
from .onnx_modules import inline_module_calls
from .onnx_names import DESCRIPTION, HOLDS, NAME, SUFFIXES  # noqa: F401  (the format record)
from .onnx_ops.registry import NEWEST_OPSET
from .onnx_tensors import (
    ExternalFiles,
    check_external_data,
    check_sparse_sizes,
    external_tensor,
    tensor_layout,
)
from .onnx_training import META_NET
from .onnx_versions import check_runtime_computes, default_opset
from .wire import WireError, iter_fields, length_delimited, splice_at_field, write_chunks

EXTERNAL_DATA_THRESHOLD = 2**31 - 2**26  # leave room for the graph itself under 2 GiB
_GRAPH, _INITIALIZER, _RAW_DATA = 7, 5, 9  # ModelProto.graph, GraphProto.initializer, TensorProto.raw_data
MODULES_KEY = "blobcast.modules"  # metadata: module instances (blobcast.modules.modules_json)
_TRAINING_INFO, _ALGORITHM = 20, 2  # ModelProto.training_info, TrainingInfoProto.algorithm
def _tensor_proto(name: str, array, external) -> TensorProto:
    array = np.asarray(array.numpy() if hasattr(array, "numpy") else array)
    if external is None:
        # not np.ascontiguousarray: it turns a 0-d array into a 1-d one
        return numpy_helper.from_array(np.array(array, order="C", copy=True), name)
    handle, location = external
    tensor = TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(array.dtype),
                         dims=list(array.shape))
    offset = handle.tell()
    padding = (-offset) % 64  # aligned, so readers can map the values in place
    handle.write(b"\0" * padding)
    offset += padding
    data = np.array(array, order="C", copy=False) if array.flags.c_contiguous else array.copy()
    handle.write(memoryview(data.reshape(-1)).cast("B"))
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)),
                       ("length", str(data.nbytes))):
        tensor.external_data.add(key=key, value=value)
    return tensor


def _inline_chunks(name: str, array) -> list:
    """An initializer as wire chunks whose raw_data is the array's own buffer
    (no copy: numpy_helper.from_array and SerializeToString would make two)."""
    data = np.asarray(array.numpy() if hasattr(array, "numpy") else array)
    if data.dtype.byteorder == ">":
        data = data.astype(data.dtype.newbyteorder("<"))
    header = TensorProto(name=name, data_type=helper.np_dtype_to_tensor_dtype(data.dtype),
                         dims=list(data.shape)).SerializeToString()
    if getattr(array, "file_bytes", None) is not None and data.size:
        body = FileChunk(array)  # copied from the input file to the output, in the kernel
    else:
        body = memoryview(data.reshape(-1) if data.flags.c_contiguous else data.copy().reshape(-1)).cast("B")
    payload = [header] + ([length_delimited(_RAW_DATA, len(body)), body] if len(body) else [])
    return [length_delimited(_INITIALIZER, sum(len(c) for c in payload)), *payload]


MIN_OPSET = 17


def check_opset(opset: int) -> int:
    """An opset blobcast can write with the installed onnx (an error names the range)."""
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise BlobcastError(f"--opset {opset}: blobcast writes opsets {MIN_OPSET} to {newest} "
                            f"(the newest the installed onnx {onnx.__version__} knows)")
    return opset


def _data_file_name(path: str) -> str:
    """`<model>.data`, or a fresh name when that file exists where the model
    goes: the model being replaced still uses it, and a new model must never
    sit beside old data (or an old model beside new data)."""
    final = final_path(path)
    name = os.path.basename(final) + ".data"
    if os.path.lexists(os.path.join(os.path.dirname(final), name)):
        name = f"{os.path.basename(final)}.{secrets.token_hex(4)}.data"
    return name


def write(model: Model, path: str, *, opset: int | None = None,
          input_shapes=None, dynamic_batch: bool = False, external_data: bool | None = None,
          strict: bool = False, given_shapes=None, progress=None, **_options) -> None:
    # By default the newest opset that onnx, onnxruntime and every layer type present take.
    if opset:
        check_runtime_computes(check_opset(opset), model.layers)
    else:
        opset = default_opset(min([DEFAULT_OPSET] + [NEWEST_OPSET[layer.type] for layer in model.layers
                                                     if layer.type in NEWEST_OPSET]), model.layers)
    builder, inputs, outputs = build_graph(model, opset=opset, input_shapes=input_shapes,
                                           dynamic_batch=dynamic_batch, strict=strict,
                                           given_shapes=given_shapes)
    as_caffe_layers = {node.name for node in builder.nodes
                       if any(a.name == LAYER_ATTRIBUTE for a in node.attribute)}
    left_out = fields_left_out(model, "binary", as_caffe_layers)
    if left_out:
        warnings.warn(f"{path}: ONNX keeps a layer's Caffe settings, as binary fields, only where the "
                      f"layer stays a Caffe node; {left_out}", BlobcastWarning, stacklevel=2)
    training, training_values, training_metadata = None, [], {}
    if model.training is not None:
        from .onnx_training import build_training_info

        training, training_values, training_metadata = build_training_info(model, builder)
    total = sum(int(np.asarray(a.numpy() if hasattr(a, "numpy") else a).nbytes)
                for _, a in builder.initializers + training_values)
    use_external = external_data if external_data is not None else total > EXTERNAL_DATA_THRESHOLD
    data_name = _data_file_name(path) if use_external else None
    handle = open(os.path.join(os.path.dirname(path), data_name), "wb") if use_external else None
    token = None
    if handle is not None:  # marks the data file as blobcast's own (onnx_data_files)
        token = new_token()
        handle.write(data_header(token))
    initializer_chunks: list = []
    training_chunks: list = []
    try:
        external = (handle, data_name) if use_external else None
        initializer_chunks = _initializer_chunks(builder.initializers, external, progress)
        training_chunks = _initializer_chunks(training_values, external, progress)
    finally:
        if handle is not None:
            handle.close()
    graph = helper.make_graph(builder.nodes, model.name or "caffe", inputs, outputs)
    graph_chunks = splice_at_field(graph.SerializeToString(), _INITIALIZER, initializer_chunks)
    opsets = [helper.make_opsetid("", opset)]
    if builder.custom_layers:
        opsets.append(helper.make_opsetid(CUSTOM_DOMAIN, 1))
    for domain in sorted({function.domain for function in builder.functions}):
        opsets.append(helper.make_opsetid(domain, 1))  # fork layers' and modules' functions
    if training is not None:
        from .onnx_training import PREVIEW_DOMAIN, TRAINING_IR_VERSION

        opsets.append(helper.make_opsetid(PREVIEW_DOMAIN, 1))
    ir_version = helper.find_min_ir_version_for(opsets, True)
    if training is not None:
        ir_version = max(ir_version, TRAINING_IR_VERSION)
    onnx_model = helper.make_model(graph, opset_imports=opsets, producer_name="blobcast",
                                   functions=builder.functions, ir_version=ir_version)
    record = modules_json(model)
    props = {**training_metadata, **({MODULES_KEY: record} if record else {}),
             **({DATA_TOKEN_KEY: token} if token else {})}
    if props:
        helper.set_model_props(onnx_model, props)
    onnx_model.ClearField("graph")
    graph_length = sum(len(c) for c in graph_chunks)
    # Graph and training info are spliced in as chunks: tensor values are
    # written from their own buffers, never copied into protobuf messages.
    head, *trained = splice_at_field(onnx_model.SerializeToString(), _TRAINING_INFO,
                                     _training_chunks(training, training_chunks) if training else [])
    chunks = [*splice_at_field(head, _GRAPH, [length_delimited(_GRAPH, graph_length), *graph_chunks]),
              *trained]
    write_chunks(path, chunks, None if use_external else progress)


def _initializer_chunks(initializers, external, progress) -> list:
    """GraphProto.initializer chunks: inline raw data, or external above 1 KB."""
    chunks: list = []
    for name, array in initializers:
        nbytes = np.asarray(array.numpy() if hasattr(array, "numpy") else array).nbytes
        if external is not None and nbytes >= 1024:
            tensor = _tensor_proto(name, array, external).SerializeToString()
            chunks += [length_delimited(_INITIALIZER, len(tensor)), tensor]
            if progress is not None:
                progress(nbytes)
        else:
            chunks += _inline_chunks(name, array)
    return chunks


def _training_chunks(info, initializer_chunks: list) -> list:
    """A TrainingInfoProto whose algorithm graph gets `initializer_chunks`, as chunks."""
    algorithm = splice_at_field(info.algorithm.SerializeToString(), _INITIALIZER, initializer_chunks)
    algorithm_length = sum(len(c) for c in algorithm)
    info.ClearField("algorithm")
    body = splice_at_field(info.SerializeToString(), _ALGORITHM,
                           [length_delimited(_ALGORITHM, algorithm_length), *algorithm])
    return [length_delimited(_TRAINING_INFO, sum(len(c) for c in body)), *body]


_CHECKED_INLINE_BYTES = 1 << 16


def check(path: str) -> str:
    """onnx's full checker on a written model (CheckFailed when it objects)."""
    from blobcast.errors import CheckFailed

    model, raw, buf = map_onnx(path)
    # The checker parses every byte it is given: a 553 MB model took 0.8 s and
    # 1.1 GB. It is given the graph with each large or external initializer
    # declared as a graph input of its type and shape instead (their sizes and
    # places are checked on reading, their values by the forward check).
    inputs = {value.name for value in model.graph.input}
    kept = []
    for tensor in model.graph.initializer:
        span = raw.get(tensor.name)
        large = span is not None and span[1] - span[0] >= _CHECKED_INLINE_BYTES
        # External data too: the checker would look for it from the working folder.
        if (large or tensor.data_location == TensorProto.EXTERNAL) and tensor.name not in inputs:
            model.graph.input.append(helper.make_tensor_value_info(
                tensor.name, tensor.data_type, list(tensor.dims)))
            continue
        if span is not None:
            tensor.raw_data = bytes(buf[span[0]:span[1]])
        kept.append(tensor)
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as error:
        raise CheckFailed(f"the written ONNX model fails onnx's checker: {error}") from error
    return "onnx checker (full)"


def external_data_files(path: str) -> set[str]:
    """The external data files a model file uses (checked as on reading)."""
    return check_external_data(map_onnx(path)[0], path)


def _data_token(path: str) -> str | None:
    return next((p.value for p in map_onnx(path)[0].metadata_props if p.key == DATA_TOKEN_KEY), None)


def replaced_data_remover(path: str):
    """Called before `path` is replaced: what removes, after, the data files
    blobcast wrote for the replaced model that nothing uses any more."""
    return stale_data_remover(path, external_data_files, _data_token)


TRAINING = "training_info"  # key prefix in map_onnx's spans for training tensors


def _rewritten(buf, start: int, end: int, rewrites: dict) -> bytes:
    """A message's bytes with each length-delimited field whose number is in
    `rewrites` replaced by rewrites[number](value start, value end)."""
    kept = bytearray()
    for number, wire, tag, vstart, vend in iter_fields(buf, start, end):
        if number in rewrites and wire == 2:
            value = rewrites[number](vstart, vend)
            kept += length_delimited(number, len(value)) + value
        else:
            kept += buf[tag:vend]
    return bytes(kept)


def _strip_graph(buf, start: int, end: int, raw: dict, training: int | None) -> bytes:
    return _rewritten(buf, start, end, {_INITIALIZER: lambda a, b: _strip_raw_data(
        buf, a, b, raw, training)})


def _strip_raw_data(buf, start, end, raw: dict, training: int | None = None) -> bytes:
    """A TensorProto's bytes without raw_data; its range goes into `raw` by name."""
    kept = bytearray()
    span = None
    name = None
    for number, wire_type, tag_start, vstart, vend in iter_fields(buf, start, end):
        if number == _RAW_DATA and wire_type == 2:
            span = (vstart, vend)
            continue
        if number == 8 and wire_type == 2:
            name = bytes(buf[vstart:vend]).decode("utf-8", "replace")
        kept += buf[tag_start:vend]
    if span is not None:
        raw[name if training is None else (TRAINING, training, name)] = span
    return bytes(kept)


def map_onnx(path: str):
    """(ModelProto without raw tensor data, {initializer name: (start, end)}, buffer).

    The file is memory-mapped and scanned, so protobuf parses only the graph
    (this also reads files over protobuf's 2 GB limit); tensor values are
    viewed in place."""
    from .mapping import map_file

    buf = map_file(path)
    raw: dict = {}
    try:
        infos = iter(range(len(buf)))  # training_info's index, for its tensors' keys in `raw`

        def training_info(start: int, end: int) -> bytes:
            index = next(infos)
            return _rewritten(buf, start, end, {_ALGORITHM: lambda a, b: _strip_graph(
                buf, a, b, raw, index)})

        stripped = _rewritten(buf, 0, len(buf), {
            _GRAPH: lambda a, b: _strip_graph(buf, a, b, raw, None),
            _TRAINING_INFO: training_info})
        model = onnx.ModelProto.FromString(bytes(stripped))
    except (WireError, Exception) as error:
        if isinstance(error, FormatError):
            raise
        raise FormatError(f"not a valid ONNX model ({type(error).__name__}: {error})", path) from error
    if not model.HasField("graph"):
        raise FormatError("not a valid ONNX model (no graph)", path)
    check_external_data(model, path)
    check_sparse_sizes(model, path)
    return model, raw, buf


def _raw_tensor(tensor: TensorProto, buf, span, path: str):
    dtype, shape, count = tensor_layout(tensor, path)
    start, end = span
    if end - start != count * dtype.itemsize:
        raise FormatError(f"initializer {tensor.name!r} holds {end - start} bytes for shape "
                          f"{list(shape)}", path)
    if dtype.kind != "f" or count * dtype.itemsize < 4096:
        return np.frombuffer(buf, dtype=dtype, count=count, offset=start).reshape(shape).copy()
    # raw_data is little-endian by the ONNX spec: the file's bytes are the values
    in_file = FileBytes(buf, start) if isinstance(buf, MappedFile) else None
    return LazyTensor(shape, dtype, lambda: np.frombuffer(buf, dtype=dtype, count=count,
                                                          offset=start).reshape(shape),
                      f"{path}:{tensor.name}", in_file)


def _tensor_values(tensors, spans, path: str, buf, what: str) -> dict:
    """{name: values} for TensorProtos: views of the file where map_onnx found
    their raw data (spans(name) -> (start, end) or None), external data mapped
    once per file, anything else decoded."""
    values = {}
    files = ExternalFiles()
    for tensor in tensors:
        span = spans(tensor.name)
        if span is not None:
            values[tensor.name] = _raw_tensor(tensor, buf, span, path)
        elif tensor.data_location == TensorProto.EXTERNAL:
            values[tensor.name] = external_tensor(tensor, path, files, f"{what} {tensor.name!r}")
        else:
            try:
                values[tensor.name] = numpy_helper.to_array(tensor)
            except Exception as error:
                raise FormatError(f"{what} {tensor.name!r} cannot be read ({error})", path) from error
    return values


def initializer_values(onnx_model, path: str, raw: dict | None = None, buf=None) -> dict:
    return _tensor_values(onnx_model.graph.initializer, (raw or {}).get, path, buf, "initializer")


def training_values(onnx_model, path: str, raw: dict, buf, index: int = 0) -> dict:
    """The algorithm initializers of training_info[index], viewed in place where stored raw."""
    return _tensor_values(onnx_model.training_info[index].algorithm.initializer,
                          lambda name: raw.get((TRAINING, index, name)), path, buf,
                          "training initializer")


def read(path: str, **_options) -> Model:
    from .onnx_import import import_model

    onnx_model, raw, buf = map_onnx(path)
    values = initializer_values(onnx_model, path, raw, buf)
    if onnx_model.training_info and any(p.key == META_NET for p in onnx_model.metadata_props):
        # A Caffe training snapshot: the training net itself comes back, with its state.
        from .onnx_training_read import read_training

        return read_training(onnx_model, values, training_values(onnx_model, path, raw, buf), path)
    try:  # module instances were written as function calls: the flat graph first
        inline_module_calls(onnx_model, path)
    except ValueError as error:
        raise FormatError(str(error), path) from None
    model = import_model(onnx_model, values, path)
    record = next((p.value for p in onnx_model.metadata_props if p.key == MODULES_KEY), None)
    if record is not None:
        try:  # the module instances the layers came from, where the import kept the layers
            apply_modules_json(model, record, strict=False)
        except ValueError as error:
            raise FormatError(f"metadata {MODULES_KEY}: {error}", path) from None
    return model


def run_training_step(path: str, gradients: dict) -> dict:
    """One step of the model's training info by blobcast's executor (onnx_step)."""
    from .onnx_step import run_step

    onnx_model, raw, buf = map_onnx(path)
    if not onnx_model.training_info:
        raise FormatError("holds no training info", path)
    values = {**initializer_values(onnx_model, path, raw, buf),
              **training_values(onnx_model, path, raw, buf)}
    values = {name: np.asarray(value.numpy() if hasattr(value, "numpy") else value)
              for name, value in values.items()}
    return run_step(onnx_model.training_info[0], values, gradients, path)
