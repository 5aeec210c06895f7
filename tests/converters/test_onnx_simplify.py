"""ONNX import ends in the fewest, most portable Caffe layers, computing
exactly what the node-by-node import computed: a Caffe BatchNorm + Scale net
comes back from ONNX as itself, and OpenCV 4 (which has no Bias layer) runs
the result."""

from collections import Counter

import cv2
import numpy as np
import pytest
from onnx import TensorProto, helper

import blobcast
from blobcast.converters.prototxt import net_from_text
from blobcast.engine import Net

from .test_onnx import _onnx_file, ort_run

NET = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 12 dim: 12 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "conv1/bn" type: "BatchNorm" bottom: "conv1" top: "conv1" batch_norm_param { use_global_stats: true } }
layer { name: "conv1/scale" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "conv1/relu" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool" type: "Pooling" bottom: "conv1" top: "pool" pooling_param { pool: AVE global_pooling: true } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


def _caffe_net(tmp_path):
    model = net_from_text(NET, "<bn net>")
    rng = np.random.default_rng(0)
    values = {"conv1": [rng.normal(0, 0.3, (8, 3, 3, 3))],
              "conv1/bn": [rng.normal(0, 0.1, 8), rng.uniform(0.5, 1.5, 8), np.ones(1)],
              "conv1/scale": [rng.normal(1, 0.1, 8), rng.normal(0, 0.1, 8)],
              "fc": [rng.normal(0, 0.3, (5, 8)), rng.normal(0, 0.1, 5)]}
    for name, arrays in values.items():
        model[name].blobs = [blobcast.Blob(np.asarray(a, np.float32)) for a in arrays]
    path = tmp_path / "net.caffemodel"
    blobcast.save(model, path)
    return model, path


def test_a_batchnorm_scale_net_comes_back_from_onnx_as_itself(tmp_path):
    model, path = _caffe_net(tmp_path)
    blobcast.convert(path, tmp_path / "net.onnx")
    blobcast.convert(tmp_path / "net.onnx", tmp_path / "back.caffemodel")
    back = blobcast.load(tmp_path / "back.caffemodel", prototxt=tmp_path / "back.prototxt")
    assert Counter(layer.type for layer in back.layers) == Counter(layer.type for layer in model.layers)
    assert back["conv1/scale"].type_params.bias_term
    x = np.random.default_rng(1).standard_normal((2, 3, 12, 12)).astype(np.float32)
    ours, theirs = Net(model).forward({"data": x}, keep_all=True), Net(back).forward({"data": x}, keep_all=True)
    assert np.array_equal(ours["fc"], theirs["fc"])
    opencv = cv2.dnn.readNetFromCaffe(str(tmp_path / "back.prototxt"), str(tmp_path / "back.caffemodel"))
    opencv.setInput(x)
    np.testing.assert_allclose(opencv.forward("fc"), ours["fc"], rtol=1e-5, atol=1e-5)


def test_a_per_channel_add_after_a_convolution_becomes_its_bias(tmp_path):
    rng = np.random.RandomState(0)
    V = helper.make_tensor_value_info
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "b"], ["y"], name="add"),
             helper.make_node("Relu", ["y"], ["r"], name="relu")]
    init = {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
            "b": rng.standard_normal((1, 4, 1, 1)).astype(np.float32)}
    path = _onnx_file(tmp_path, nodes, [V("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                      [V("r", TensorProto.FLOAT, None)], init)
    report = blobcast.convert(path, tmp_path / "out.caffemodel")
    assert report.forward["passed"]
    model = blobcast.load(tmp_path / "out.caffemodel", prototxt=tmp_path / "out.prototxt")
    assert [layer.type for layer in model.layers] == ["Input", "Convolution", "ReLU"]
    assert model["conv"].type_params.bias_term
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(Net(model).forward({"x": x})["r"], ort_run(path, {"x": x})["r"],
                               rtol=1e-5, atol=1e-5)


def test_an_identity_scale_that_is_a_graph_output_stays(tmp_path):
    V = helper.make_tensor_value_info
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Mul", ["r", "ones"], ["y"], name="times_one")]
    path = _onnx_file(tmp_path, nodes, [V("x", TensorProto.FLOAT, [1, 3, 2, 2])],
                      [V("y", TensorProto.FLOAT, None)], {"ones": np.ones((1, 3, 1, 1), np.float32)})
    blobcast.convert(path, tmp_path / "out.caffemodel")
    model = blobcast.load(tmp_path / "out.caffemodel", prototxt=tmp_path / "out.prototxt")
    assert "y" in [top for layer in model.layers for top in layer.tops]


SE_NET = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 4 dim: 6 dim: 6 } } }
layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" pooling_param { pool: AVE global_pooling: true } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param { num_output: 4 } }
layer { name: "gate" type: "Sigmoid" bottom: "fc" top: "gate" }
layer { name: "excite" type: "Scale" bottom: "data" bottom: "gate" top: "excite" scale_param { axis: 0 } }
"""


def test_a_two_bottom_scale_comes_back_from_onnx_as_itself(tmp_path):
    model = net_from_text(SE_NET, "<se>")
    rng = np.random.default_rng(2)
    model["fc"].blobs = [blobcast.Blob(rng.normal(0, 1, (4, 4)).astype(np.float32)),
                         blobcast.Blob(rng.normal(0, 1, 4).astype(np.float32))]
    blobcast.save(model, tmp_path / "se.caffemodel")
    blobcast.convert(tmp_path / "se.caffemodel", tmp_path / "se.onnx")
    report = blobcast.convert(tmp_path / "se.onnx", tmp_path / "back.caffemodel")
    assert report.forward["passed"]
    back = blobcast.load(tmp_path / "back.caffemodel", prototxt=tmp_path / "back.prototxt")
    assert [layer.type for layer in back.layers] == [layer.type for layer in model.layers]
    assert back.layers[-1].bottoms[1] == back.layers[-2].tops[0]  # the gate itself, (N, C)
    x = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    expected = Net(model).forward({"data": x})["excite"]
    assert np.array_equal(Net(back).forward({"data": x})["excite"], expected)
    opencv = cv2.dnn.readNetFromCaffe(str(tmp_path / "back.prototxt"), str(tmp_path / "back.caffemodel"))
    opencv.setInput(x)
    np.testing.assert_allclose(opencv.forward(), expected, rtol=1e-5, atol=1e-6)


def test_torch_style_channel_gating_imports_as_a_two_bottom_scale(tmp_path):
    # GlobalAveragePool -> 1x1 Conv -> Sigmoid -> Mul(x, gate (N, C, 1, 1)), as torch.onnx writes SE blocks
    rng = np.random.RandomState(3)
    V = helper.make_tensor_value_info
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["squeeze"], name="squeeze"),
             helper.make_node("Conv", ["squeeze", "w", "b"], ["logits"], name="reduce"),
             helper.make_node("Sigmoid", ["logits"], ["gate"], name="gate"),
             helper.make_node("Mul", ["x", "gate"], ["y"], name="excite"),
             helper.make_node("Add", ["y", "gate"], ["z"], name="shift")]
    init = {"w": rng.standard_normal((4, 4, 1, 1)).astype(np.float32),
            "b": rng.standard_normal(4).astype(np.float32)}
    path = _onnx_file(tmp_path, nodes, [V("x", TensorProto.FLOAT, [2, 4, 5, 5])],
                      [V("z", TensorProto.FLOAT, None)], init)
    report = blobcast.convert(path, tmp_path / "out.caffemodel")
    assert report.forward["passed"]
    model = blobcast.load(tmp_path / "out.caffemodel", prototxt=tmp_path / "out.prototxt")
    types = [layer.type for layer in model.layers]
    assert types.count("Scale") == 1 and types.count("Bias") == 1 and "Eltwise" not in types
    x = rng.standard_normal((2, 4, 5, 5)).astype(np.float32)
    expected = ort_run(path, {"x": x})["z"]
    np.testing.assert_allclose(Net(model).forward({"x": x})["z"], expected, rtol=1e-5, atol=1e-6)


def test_a_reshape_transpose_reshape_channel_shuffle_imports_as_one_shufflechannel(tmp_path):
    V = helper.make_tensor_value_info
    nodes = [helper.make_node("Reshape", ["x", "grouped"], ["g"], name="split_groups"),
             helper.make_node("Transpose", ["g"], ["t"], name="swap", perm=[0, 2, 1, 3, 4]),
             helper.make_node("Reshape", ["t", "merged"], ["y"], name="merge"),
             helper.make_node("Relu", ["y"], ["r"], name="relu")]
    init = {"grouped": np.array([2, 3, 4, 5, 5], np.int64), "merged": np.array([2, 12, 5, 5], np.int64)}
    path = _onnx_file(tmp_path, nodes, [V("x", TensorProto.FLOAT, [2, 12, 5, 5])],
                      [V("r", TensorProto.FLOAT, None)], init)
    report = blobcast.convert(path, tmp_path / "out.caffemodel", target="opencv")
    assert report.forward["passed"] and any(n.startswith("OpenCV runs it") for n in report.notes)
    model = blobcast.load(tmp_path / "out.caffemodel", prototxt=tmp_path / "out.prototxt")
    assert [layer.type for layer in model.layers] == ["Input", "ShuffleChannel", "ReLU"]
    assert model.layers[1].type_params.group == 3
    x = np.random.default_rng(4).standard_normal((2, 12, 5, 5)).astype(np.float32)
    assert np.array_equal(Net(model).forward({"x": x})["r"], ort_run(path, {"x": x})["r"])


def test_bilinear_resize_with_aligned_corners_imports_as_interp(tmp_path):
    V = helper.make_tensor_value_info
    nodes = [helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], name="up", mode="linear",
                              coordinate_transformation_mode="align_corners")]
    path = _onnx_file(tmp_path, nodes, [V("x", TensorProto.FLOAT, [1, 3, 5, 7])],
                      [V("y", TensorProto.FLOAT, None)], {"sizes": np.array([1, 3, 9, 13], np.int64)})
    report = blobcast.convert(path, tmp_path / "out.caffemodel", target="opencv")
    assert report.forward["passed"] and any(n.startswith("OpenCV runs it") for n in report.notes)
    model = blobcast.load(tmp_path / "out.caffemodel", prototxt=tmp_path / "out.prototxt")
    assert [layer.type for layer in model.layers] == ["Input", "Interp"]
    x = np.random.default_rng(5).standard_normal((1, 3, 5, 7)).astype(np.float32)
    np.testing.assert_allclose(Net(model).forward({"x": x})["y"], ort_run(path, {"x": x})["y"], rtol=1e-5, atol=1e-6)


def test_a_scalar_multiply_then_add_is_one_power(tmp_path):
    V = helper.make_tensor_value_info
    nodes = [helper.make_node("Mul", ["x", "a"], ["m"], name="times"),
             helper.make_node("Add", ["m", "b"], ["y"], name="plus")]
    path = _onnx_file(tmp_path, nodes, [V("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                      [V("y", TensorProto.FLOAT, None)], {"a": np.float32(0.017), "b": np.float32(-2.1)})
    blobcast.convert(path, tmp_path / "out.caffemodel")
    model = blobcast.load(tmp_path / "out.caffemodel", prototxt=tmp_path / "out.prototxt")
    assert [layer.type for layer in model.layers] == ["Input", "Power"]
    settings = model.layers[1].type_params
    assert np.float32(settings.scale) == np.float32(0.017) and np.float32(settings.shift) == np.float32(-2.1)
    x = np.random.default_rng(6).standard_normal((1, 3, 4, 4)).astype(np.float32)
    assert np.array_equal(Net(model).forward({"x": x})["y"], ort_run(path, {"x": x})["y"])


@pytest.mark.parametrize("pads,strides", [([0, 1, 2, 1], [1, 1]), ([0, 0, 2, 2], [2, 2]), ([3, 0, 1, 2], [2, 1])])
def test_asymmetric_convolution_pads_become_symmetric_ones_and_a_slice(pads, strides, tmp_path):
    rng = np.random.RandomState(7)
    V = helper.make_tensor_value_info
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=pads, strides=strides)]
    path = _onnx_file(tmp_path, nodes, [V("x", TensorProto.FLOAT, [1, 3, 9, 8])],
                      [V("y", TensorProto.FLOAT, None)], {"w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32)})
    report = blobcast.convert(path, tmp_path / "out.caffemodel", target="opencv")
    assert report.forward["passed"] and any(n.startswith("OpenCV runs it") for n in report.notes)
    model = blobcast.load(tmp_path / "out.caffemodel", prototxt=tmp_path / "out.prototxt")
    assert {layer.type for layer in model.layers} <= {"Input", "Convolution", "Slice", "Silence"}
    x = rng.standard_normal((1, 3, 9, 8)).astype(np.float32)
    np.testing.assert_allclose(Net(model).forward({"x": x})["y"], ort_run(path, {"x": x})["y"], rtol=1e-5, atol=1e-5)


def test_asymmetric_pads_that_shift_by_part_of_a_stride_are_refused_clearly(tmp_path):
    V = helper.make_tensor_value_info
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", pads=[0, 0, 1, 1], strides=[2, 2])]
    path = _onnx_file(tmp_path, nodes, [V("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                      [V("y", TensorProto.FLOAT, None)], {"w": np.ones((4, 3, 3, 3), np.float32)})
    with pytest.raises(blobcast.FormatError, match="not a whole number of stride-2 outputs"):
        blobcast.convert(path, tmp_path / "out.caffemodel")


ROUND_TRIP_NET = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 4 dim: 6 dim: 6 } } }
layer { name: "ref" type: "Input" top: "ref" input_param { shape { dim: 2 dim: 4 dim: 4 dim: 4 } } }
layer { name: "crop" type: "Crop" bottom: "data" bottom: "ref" top: "crop" crop_param { axis: 2 offset: 1 } }
layer { name: "elt" type: "Eltwise" bottom: "crop" bottom: "ref" top: "elt" eltwise_param { operation: SUM coeff: 0.5 coeff: -2 } }
layer { name: "flat" type: "Flatten" bottom: "elt" top: "flat" flatten_param { axis: 1 end_axis: 2 } }
layer { name: "arg" type: "ArgMax" bottom: "flat" top: "arg" argmax_param { axis: 1 } }
layer { name: "bias" type: "Bias" bottom: "elt" top: "biased" }
layer { name: "reshape" type: "Reshape" bottom: "biased" top: "r" reshape_param { shape { dim: 0 dim: -1 } } }
"""


def test_crop_eltwise_coefficients_flatten_argmax_bias_and_reshape_come_back_from_onnx(tmp_path):
    model = net_from_text(ROUND_TRIP_NET, "<round trip>")
    model["bias"].blobs = [blobcast.Blob(np.arange(4, dtype=np.float32))]
    blobcast.save(model, tmp_path / "net.caffemodel")
    blobcast.convert(tmp_path / "net.caffemodel", tmp_path / "net.onnx")
    report = blobcast.convert(tmp_path / "net.onnx", tmp_path / "back.caffemodel")
    assert report.forward["passed"]
    back = blobcast.load(tmp_path / "back.caffemodel", prototxt=tmp_path / "back.prototxt")
    assert len(back.layers) <= len(model.layers)
    types = Counter(layer.type for layer in back.layers)
    assert types["Crop"] == types["ArgMax"] == types["Bias"] == types["Eltwise"] == 1
    assert "Power" not in types and "Split" not in types
    assert list(back["elt"].type_params.coeff) == [0.5, -2.0]
    rng = np.random.default_rng(10)
    feeds = {"data": rng.standard_normal((2, 4, 6, 6)).astype(np.float32),
             "ref": rng.standard_normal((2, 4, 4, 4)).astype(np.float32)}
    ours, theirs = Net(model).forward(feeds), Net(back).forward(feeds)
    for name in ours:
        assert np.array_equal(ours[name], theirs[name]), name


def test_transpose_becomes_permute_and_a_sub_range_slice_leaves_the_rest_to_silence(tmp_path):
    rng = np.random.default_rng(2)
    V = helper.make_tensor_value_info
    nodes = [helper.make_node("Transpose", ["x"], ["t"], name="nhwc", perm=[0, 2, 3, 1]),
             helper.make_node("Slice", ["t", "starts", "ends", "axes"], ["part"], name="part")]
    init = {"starts": np.array([1], np.int64), "ends": np.array([3], np.int64), "axes": np.array([3], np.int64)}
    path = _onnx_file(tmp_path, nodes, [V("x", TensorProto.FLOAT, [1, 4, 5, 6])],
                      [V("part", TensorProto.FLOAT, None)], init, name="permute.onnx")
    report = blobcast.convert(path, tmp_path / "p.caffemodel")
    assert report.forward["passed"] and report.forward["max_abs_error"] == 0
    model = blobcast.load(tmp_path / "p.caffemodel", prototxt=tmp_path / "p.prototxt")
    kinds = [layer.type for layer in model.layers]
    assert kinds[:3] == ["Input", "Permute", "Slice"] and "Silence" in kinds
    assert list(model["nhwc"].spec.permute_param.order) == [0, 2, 3, 1]
    x = rng.standard_normal((1, 4, 5, 6)).astype(np.float32)
    assert np.array_equal(Net(model).forward({"x": x})["part"], ort_run(path, {"x": x})["part"])
