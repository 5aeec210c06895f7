"""Tensors that lie verbatim in an input file travel file to file: HDF5
output copies them in the kernel, the bit-exact check compares the two
files' bytes without mapping them, and the engine reads misaligned ones into
aligned memory from the file. Each path gives the values the plain one does."""

import errno
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

import blobcast
from blobcast.check.compare import model_differences
from blobcast.errors import FormatError
from blobcast.tensor import ALIGNMENT, aligned_values, same_bits

ZOO = Path(__file__).resolve().parents[2] / "fixtures" / "caffe" / "zoo" / "zoo.caffemodel"


def _all_blobs(model):
    return [(layer.name, j, blob) for layer in model.layers for j, blob in enumerate(layer.blobs)
            if blob is not None]


def test_caffemodel_tensors_know_their_bytes_in_the_file():
    model = blobcast.load(ZOO)
    raw = ZOO.read_bytes()
    for name, j, blob in _all_blobs(model):
        where = blob.data.file_bytes
        assert where is not None, (name, j)
        assert raw[where.offset:where.offset + blob.data.nbytes] == blob.data.numpy().tobytes()


@pytest.mark.parametrize("kernel_copies", [True, False])
def test_hdf5_output_holds_the_same_values_copied_in_the_kernel_or_not(kernel_copies, tmp_path, monkeypatch):
    if not kernel_copies:
        def refuse(*args):
            raise OSError(errno.EXDEV, "not between these files")
        monkeypatch.setattr(os, "copy_file_range", refuse)
    out = tmp_path / "zoo.caffemodel.h5"
    blobcast.convert(ZOO, out)
    source = blobcast.load(ZOO)
    with h5py.File(out) as handle:
        for name, j, blob in _all_blobs(source):
            assert np.array_equal(handle["data"][name][str(j)][()], blob.data.numpy()), (name, j)
            assert handle["data"][name][str(j)].id.get_offset() % ALIGNMENT == 0 or blob.data.nbytes < 4096


def test_a_source_that_ends_early_is_refused_not_copied_short(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "copy_file_range", lambda *args: 0)
    out = tmp_path / "zoo.caffemodel.h5"
    with pytest.raises(FormatError, match="ended before"):
        blobcast.convert(ZOO, out)
    assert not out.exists()


def test_the_file_to_file_comparison_finds_one_changed_bit(tmp_path):
    out = tmp_path / "zoo.caffemodel.h5"
    blobcast.convert(ZOO, out)
    source, written = blobcast.load(ZOO), blobcast.load(out)
    assert model_differences(source, written) == []
    name, j, blob = max(_all_blobs(source), key=lambda entry: entry[2].data.nbytes)
    with h5py.File(out) as handle:
        offset = handle["data"][name][str(j)].id.get_offset()
    with open(out, "r+b") as handle:  # the last byte of the largest blob
        handle.seek(offset + blob.data.nbytes - 1)
        last = handle.read(1)
        handle.seek(offset + blob.data.nbytes - 1)
        handle.write(bytes([last[0] ^ 1]))
    changed = blobcast.load(out)
    assert changed[name].blobs[j].data.file_bytes is not None
    assert not same_bits(source[name].blobs[j].data, changed[name].blobs[j].data)
    assert model_differences(source, changed) == [f"layer {name!r} blob {j}: values differ"]


def test_values_in_a_file_are_read_aligned_from_it_without_mapping_them():
    model = blobcast.load(ZOO)
    tensors = [blob.data for _, _, blob in _all_blobs(model)]
    assert any(tensor.file_bytes.offset % ALIGNMENT for tensor in tensors)
    for tensor in tensors:
        values = aligned_values(tensor)
        assert values.ctypes.data % ALIGNMENT == 0
        assert not tensor.is_loaded  # read through the descriptor, not the mapping
        assert np.array_equal(values, tensor.numpy())


def test_the_onnx_check_sees_the_graph_without_parsing_the_weights(tmp_path):
    from onnx import TensorProto, helper, save

    from blobcast.converters.onnx_format import check
    from blobcast.errors import CheckFailed

    weight = helper.make_tensor("w", TensorProto.FLOAT, [64, 64, 3, 3],
                                np.zeros((64, 64, 3, 3), np.float32).tobytes(), raw=True)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, 8, 8])

    def model(op_type: str, output_channels: int):
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, output_channels, 8, 8])
        graph = helper.make_graph([helper.make_node(op_type, ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
                                  "g", [x], [y], [weight])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    good, unknown, misshapen = (tmp_path / f"{n}.onnx" for n in ("good", "unknown", "misshapen"))
    save(model("Conv", 64), good)
    save(model("NoSuchOp", 64), unknown)
    save(model("Conv", 32), misshapen)  # the weights give 64 channels, the output says 32
    assert check(str(good)) == "onnx checker (full)"
    with pytest.raises(CheckFailed, match="NoSuchOp"):
        check(str(unknown))
    with pytest.raises(CheckFailed):
        check(str(misshapen))
