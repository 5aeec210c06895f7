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
    opsets = [helper.make_opsetid("", opset)]
    # the oldest IR version for the opset: the runtimes pyproject allows read it
    onnx.save(helper.make_model(graph, opset_imports=opsets,
                                ir_version=helper.find_min_ir_version_for(opsets)), path)
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


def _run_both(onnx_path, caffe_path, x):
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": x})[0]
    model = blobcast.load(caffe_path)
    got = np.asarray(blobcast.engine.Net(model).forward({"x": x})["y"])
    return model, expected, got


@pytest.mark.parametrize("target,types", [
    ("caffe", {"Power", "Clip", "Eltwise"}),
    ("opencv", {"Power", "ReLU", "Eltwise"}),
    ("caffe-1.0", {"Power", "ReLU", "Eltwise"}),
])
def test_hard_sigmoid_and_hard_swish_take_each_targets_layers(target, types, tmp_path):
    path = _save(tmp_path / "hard.onnx", [
        helper.make_node("HardSigmoid", ["x"], ["gate"], name="/gate/HardSigmoid", alpha=0.3, beta=0.4),
        helper.make_node("HardSwish", ["gate"], ["y"], name="/act/HardSwish")],
        [_float("x", [1, 2, 5, 5])], [_float("y", [1, 2, 5, 5])], opset=14)
    out = tmp_path / "hard.caffemodel"
    blobcast.convert(path, out, target=target)
    x = np.linspace(-8, 8, 50, dtype=np.float32).reshape(1, 2, 5, 5)
    model, expected, got = _run_both(path, out, x)
    assert {layer.type for layer in model.layers} - {"Input"} == types
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    assert expected.min() == 0 and expected.max() > 0.5  # both clipped ends reached


@pytest.mark.parametrize("keepdims", [0, 1])
def test_a_mean_over_height_and_width_is_global_average_pooling_opencv_takes(keepdims, tmp_path):
    rng = np.random.default_rng(5)
    shape = [1, 3] if not keepdims else [1, 3, 1, 1]
    path = _save(tmp_path / "mean.onnx", [
        helper.make_node("Relu", ["x"], ["r"], name="/relu/Relu"),
        helper.make_node("ReduceMean", ["r"], ["y"], name="/ReduceMean", axes=[2, 3], keepdims=keepdims)],
        [_float("x", [1, 3, 7, 5])], [_float("y", shape)])
    out = tmp_path / "mean.caffemodel"
    blobcast.convert(path, out, target="opencv")  # OpenCV runs it too, where installed
    x = rng.standard_normal((1, 3, 7, 5)).astype(np.float32)
    model, expected, got = _run_both(path, out, x)
    pooling = [layer for layer in model.layers if layer.type == "Pooling"]
    assert len(pooling) == 1 and pooling[0].spec.pooling_param.global_pooling
    assert "Reduction" not in {layer.type for layer in model.layers}
    np.testing.assert_allclose(got.reshape(expected.shape), expected, rtol=1e-6)


AVE_NET = """name: "ave"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 8 dim: 8 } } }
layer { name: "pool" type: "Pooling" bottom: "data" top: "pool"
        pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
"""


@pytest.mark.parametrize("release,expected", [("1.23.2", 18), ("1.21.1", 18), ("1.25.1", None),
                                              ("1.20.1", None)])
def test_the_default_opset_avoids_a_runtime_that_computes_padded_average_pooling_wrongly(
        release, expected, tmp_path, monkeypatch):
    from blobcast.converters import onnx_versions

    net = tmp_path / "ave.prototxt"
    net.write_text(AVE_NET)
    installed = onnx_versions.runtime_newest_opset(onnx_versions.installed_runtime()) or 0
    if expected is None and installed < (onnx_versions.runtime_newest_opset(release) or 0):
        pytest.skip(f"the installed onnxruntime cannot run the opset onnxruntime {release} takes")
    monkeypatch.setattr(onnx_versions, "installed_runtime", lambda: release)
    out = tmp_path / "ave.onnx"
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always", BlobcastWarning)
        blobcast.convert(net, out)
    stamped = onnx.load(out).opset_import[0].version
    if expected is None:
        assert stamped >= 19 and not said
    else:
        assert stamped == expected
        assert any(f"onnxruntime {release} computes AveragePool" in str(w.message) for w in said)


def test_slices_of_one_blob_become_one_slice_without_silence(tmp_path):
    """torch's chunk(2) as the legacy exporter writes it: one Slice per half."""
    def ints(name, values):
        return numpy_helper.from_array(np.asarray(values, np.int64), name)

    path = _save(tmp_path / "chunk.onnx", [
        helper.make_node("Slice", ["x", "zero", "half", "axis"], ["a"], name="/Slice"),
        helper.make_node("Slice", ["x", "half", "end", "axis"], ["b"], name="/Slice_1"),
        helper.make_node("Relu", ["b"], ["rb"], name="/Relu"),
        helper.make_node("Concat", ["rb", "a"], ["y"], name="/Concat", axis=1)],
        [_float("x", [1, 4, 3, 3])], [_float("y", [1, 4, 3, 3])],
        [ints("zero", [0]), ints("half", [2]), ints("end", [4]), ints("axis", [1])])
    out = tmp_path / "chunk.caffemodel"
    blobcast.convert(path, out, target="rknn")  # RKNN has Slice but no Silence
    x = np.random.default_rng(2).standard_normal((1, 4, 3, 3)).astype(np.float32)
    model, expected, got = _run_both(path, out, x)
    types = [layer.type for layer in model.layers]
    assert types.count("Slice") == 1 and "Silence" not in types
    np.testing.assert_array_equal(got, expected)
