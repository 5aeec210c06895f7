"""ONNX -> Caffe on graphs as PyTorch's exporters write them: path-like node
names, Hard* activations, ReduceMean heads, shape arithmetic."""

import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import blobcast
from blobcast.errors import BlobcastWarning

ort = pytest.importorskip("onnxruntime")


def _save(path, nodes, inputs, outputs, initializers=(), opset=13):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), path)
    return path


def _float(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _conv_weights(rng, name, shape):
    return numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name)


def test_legacy_exporter_names_become_layers_an_hdf5_snapshot_reads_back(tmp_path):
    rng = np.random.default_rng(3)
    path = _save(tmp_path / "slash.onnx", [
        helper.make_node("Conv", ["x", "conv.weight", "conv.bias"], ["/conv/Conv_output_0"],
                         name="/conv/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["/conv/Conv_output_0"], ["/relu/Relu_output_0"], name="/relu/Relu"),
        helper.make_node("Conv", ["/relu/Relu_output_0", "head.weight"], ["y"], name="//head/./Conv")],
        [_float("x", [1, 3, 8, 8])], [_float("y", [1, 4, 8, 8])],
        [_conv_weights(rng, "conv.weight", (4, 3, 3, 3)), _conv_weights(rng, "conv.bias", (4,)),
         _conv_weights(rng, "head.weight", (4, 4, 1, 1))])
    out = tmp_path / "slash.caffemodel.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BlobcastWarning)  # nested groups: said, not refused
        report = blobcast.convert(path, out)
    assert report.check == "bit-exact"
    names = [layer.name for layer in blobcast.load(out).layers if layer.blobs]
    assert names == ["conv/Conv", "head/Conv"]
