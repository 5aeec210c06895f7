"""ONNX -> Caffe for OpenCV 4, the nets people convert: a ResNet block
(BatchNorm + Scale), MobileNet (depthwise, ReLU6), an SE block (broadcast
Mul), a ShuffleNet shuffle and a YOLO nearest upsample. Each is built twice
as ONNX, by blobcast's exporter from the Caffe net and by hand in the
patterns torch.onnx writes, imported with --target opencv, and run in
OpenCV: the convert's forward check compares the written net with
onnxruntime (atol 1e-5, rtol 1e-3), and its OpenCV check compares OpenCV with
the written net on the same inputs (the same tolerances). The imported nets
have no more layers than the Caffe nets."""

import cv2
import numpy as np
import pytest
from onnx import TensorProto, helper

import blobcast

from ..converters.test_onnx import _onnx_file, ort_run
from ..netgen import with_random_weights

INPUT = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 8 dim: 16 dim: 16 } } }\n'


def _conv(name, bottom, outputs, kernel=3, pad=1, stride=1, group=1, bias=True):
    return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" '
            f'convolution_param {{ num_output: {outputs} kernel_size: {kernel} pad: {pad} stride: {stride} '
            f'group: {group} bias_term: {"true" if bias else "false"} }} }}\n')


def _layer(name, kind, bottoms, top=None, settings=""):
    bottoms = "".join(f'bottom: "{b}" ' for b in bottoms)
    return f'layer {{ name: "{name}" type: "{kind}" {bottoms}top: "{top or name}" {settings} }}\n'


def _head(bottom):
    return (_layer("pool", "Pooling", [bottom], settings="pooling_param { pool: AVE global_pooling: true }")
            + _layer("fc", "InnerProduct", ["pool"],
                     settings="inner_product_param { num_output: 5 }"))


CAFFE_NETS = {
    "resnet": INPUT
    + _conv("conv1", "data", 8, bias=False)
    + _layer("conv1/bn", "BatchNorm", ["conv1"], "conv1", "batch_norm_param { use_global_stats: true }")
    + _layer("conv1/scale", "Scale", ["conv1"], "conv1", "scale_param { bias_term: true }")
    + _layer("conv1/relu", "ReLU", ["conv1"], "conv1")
    + _conv("conv2", "conv1", 8, bias=False)
    + _layer("conv2/bn", "BatchNorm", ["conv2"], "conv2", "batch_norm_param { use_global_stats: true }")
    + _layer("conv2/scale", "Scale", ["conv2"], "conv2", "scale_param { bias_term: true }")
    + _layer("sum", "Eltwise", ["data", "conv2"])
    + _layer("sum/relu", "ReLU", ["sum"], "sum")
    + _head("sum"),
    "mobilenet": INPUT
    + _conv("conv1", "data", 16, stride=2)
    + _layer("conv1/relu6", "ReLU6", ["conv1"], "conv1")
    + _conv("dw", "conv1", 16, group=16)
    + _layer("dw/relu6", "ReLU6", ["dw"], "dw")
    + _conv("pw", "dw", 24, kernel=1, pad=0)
    + _layer("pw/relu6", "ReLU6", ["pw"], "pw")
    + _head("pw"),
    "se": INPUT
    + _conv("conv1", "data", 16)
    + _layer("conv1/relu", "ReLU", ["conv1"], "conv1")
    + _layer("squeeze", "Pooling", ["conv1"], settings="pooling_param { pool: AVE global_pooling: true }")
    + _conv("reduce", "squeeze", 4, kernel=1, pad=0)
    + _layer("reduce/relu", "ReLU", ["reduce"], "reduce")
    + _conv("expand", "reduce", 16, kernel=1, pad=0)
    + _layer("gate", "Sigmoid", ["expand"])
    + _layer("gate/flat", "Flatten", ["gate"])
    + _layer("excite", "Scale", ["conv1", "gate/flat"], settings="scale_param { axis: 0 }")
    + _head("excite"),
    "shuffle": INPUT
    + _conv("conv1", "data", 16, group=2)
    + _layer("conv1/relu", "ReLU", ["conv1"], "conv1")
    + _layer("shuffle", "ShuffleChannel", ["conv1"], settings="shuffle_channel_param { group: 2 }")
    + _conv("conv2", "shuffle", 16, group=2)
    + _head("conv2"),
    "yolo": INPUT
    + _conv("conv1", "data", 8)
    + _layer("conv1/relu", "ReLU", ["conv1"], "conv1", "relu_param { negative_slope: 0.1 }")
    + _conv("down", "conv1", 8, stride=2)
    + _layer("up", "Upsample", ["down"], settings="upsample_param { scale: 2 }")
    + _layer("route", "Concat", ["up", "conv1"])
    + _conv("detect", "route", 6, kernel=1, pad=0),
}


def _caffe_net(name, tmp_path):
    model = with_random_weights(CAFFE_NETS[name], {"data": (1, 8, 16, 16)}, seed=len(name))
    path = tmp_path / f"{name}.caffemodel"
    blobcast.save(model, path)
    return model, path


def _by_hand(name, tmp_path):
    """The same net as an ONNX exporter from PyTorch writes it."""
    rng = np.random.RandomState(len(name))
    f32 = lambda *shape: rng.normal(0, 0.3, shape).astype(np.float32)  # noqa: E731
    node, V = helper.make_node, helper.make_tensor_value_info
    head = [node("GlobalAveragePool", ["feat"], ["gap"], name="pool"),
            node("Flatten", ["gap"], ["flat"], name="flatten"),
            node("Gemm", ["flat", "fw", "fb"], ["logits"], name="fc", transB=1)]
    init = {}
    if name == "resnet":
        nodes = [node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1] * 4),
                 node("BatchNormalization", ["c1", "g1", "b1", "m1", "v1"], ["n1"], name="bn1"),
                 node("Relu", ["n1"], ["r1"], name="relu1"),
                 node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1] * 4),
                 node("BatchNormalization", ["c2", "g2", "b2", "m2", "v2"], ["n2"], name="bn2"),
                 node("Add", ["x", "n2"], ["s"], name="add"),
                 node("Relu", ["s"], ["feat"], name="relu2")] + head
        for i in (1, 2):
            init.update({f"w{i}": f32(8, 8, 3, 3), f"g{i}": 1 + f32(8), f"b{i}": f32(8), f"m{i}": f32(8),
                         f"v{i}": rng.uniform(0.5, 2, 8).astype(np.float32)})
        init.update(fw=f32(5, 8), fb=f32(5))
    elif name == "mobilenet":
        nodes = [node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1] * 4, strides=[2, 2]),
                 node("Clip", ["c1", "zero", "six"], ["r1"], name="relu6_1"),
                 node("Conv", ["r1", "w2", "b2"], ["c2"], name="dw", pads=[1] * 4, group=16),
                 node("Clip", ["c2", "zero", "six"], ["r2"], name="relu6_2"),
                 node("Conv", ["r2", "w3", "b3"], ["c3"], name="pw"),
                 node("Clip", ["c3", "zero", "six"], ["feat"], name="relu6_3")] + head
        init.update(w1=f32(16, 8, 3, 3) * 3, b1=f32(16) * 10, w2=f32(16, 1, 3, 3) * 3, b2=f32(16),
                    w3=f32(24, 16, 1, 1) * 3, b3=f32(24), fw=f32(5, 24), fb=f32(5),
                    zero=np.float32(0), six=np.float32(6))
    elif name == "se":
        nodes = [node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1] * 4),
                 node("Relu", ["c1"], ["r1"], name="relu1"),
                 node("GlobalAveragePool", ["r1"], ["sq"], name="squeeze"),
                 node("Conv", ["sq", "w2", "b2"], ["red"], name="reduce"),
                 node("Relu", ["red"], ["redr"], name="reduce_relu"),
                 node("Conv", ["redr", "w3", "b3"], ["exp"], name="expand"),
                 node("Sigmoid", ["exp"], ["gate"], name="gate"),
                 node("Mul", ["r1", "gate"], ["feat"], name="excite")] + head
        init.update(w1=f32(16, 8, 3, 3), b1=f32(16), w2=f32(4, 16, 1, 1), b2=f32(4), w3=f32(16, 4, 1, 1),
                    b3=f32(16), fw=f32(5, 16), fb=f32(5))
    elif name == "shuffle":
        nodes = [node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1] * 4, group=2),
                 node("Relu", ["c1"], ["r1"], name="relu1"),
                 node("Reshape", ["r1", "split_shape"], ["g"], name="shuffle_reshape1"),
                 node("Transpose", ["g"], ["t"], name="shuffle_transpose", perm=[0, 2, 1, 3, 4]),
                 node("Reshape", ["t", "merge_shape"], ["s"], name="shuffle_reshape2"),
                 node("Conv", ["s", "w2", "b2"], ["feat"], name="conv2", pads=[1] * 4, group=2)] + head
        init.update(w1=f32(16, 4, 3, 3), b1=f32(16), w2=f32(16, 8, 3, 3), b2=f32(16), fw=f32(5, 16),
                    fb=f32(5), split_shape=np.array([1, 2, 8, 16, 16], np.int64),
                    merge_shape=np.array([1, 16, 16, 16], np.int64))
    else:  # yolo
        nodes = [node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1] * 4),
                 node("LeakyRelu", ["c1"], ["r1"], name="leaky", alpha=0.1),
                 node("Conv", ["r1", "w2", "b2"], ["d"], name="down", pads=[1] * 4, strides=[2, 2]),
                 node("Resize", ["d", "", "scales"], ["u"], name="up", mode="nearest"),
                 node("Concat", ["u", "r1"], ["route"], name="route", axis=1),
                 node("Conv", ["route", "w3", "b3"], ["logits"], name="detect")]
        init.update(w1=f32(8, 8, 3, 3), b1=f32(8), w2=f32(8, 8, 3, 3), b2=f32(8), w3=f32(6, 16, 1, 1),
                    b3=f32(6), scales=np.array([1, 1, 2, 2], np.float32))
    return _onnx_file(tmp_path, nodes, [V("x", TensorProto.FLOAT, [1, 8, 16, 16])],
                      [V("logits", TensorProto.FLOAT, None)], init, name=f"{name}_by_hand.onnx", opset=17)


def _import_for_opencv(onnx_path, tmp_path, stem):
    out = tmp_path / f"{stem}.caffemodel"
    report = blobcast.convert(onnx_path, out, target="opencv")
    assert report.forward["passed"], report.forward
    assert any(note.startswith("OpenCV runs it: 1 outputs agree") for note in report.notes), report.notes
    return blobcast.load(out, prototxt=tmp_path / f"{stem}.prototxt"), out


@pytest.mark.parametrize("name", CAFFE_NETS)
def test_exported_nets_come_back_for_opencv_no_larger(name, tmp_path):
    model, path = _caffe_net(name, tmp_path)
    blobcast.convert(path, tmp_path / f"{name}.onnx")
    back, _ = _import_for_opencv(tmp_path / f"{name}.onnx", tmp_path, f"{name}_back")
    assert len(back.layers) <= len(model.layers), [layer.type for layer in back.layers]


@pytest.mark.parametrize("name", CAFFE_NETS)
def test_hand_built_onnx_nets_import_for_opencv_no_larger(name, tmp_path):
    model, _ = _caffe_net(name, tmp_path)
    onnx_path = _by_hand(name, tmp_path)
    back, out = _import_for_opencv(onnx_path, tmp_path, f"{name}_hand")
    assert len(back.layers) <= len(model.layers), [layer.type for layer in back.layers]
    # and, independently of the convert's own checks: OpenCV against onnxruntime
    x = np.random.default_rng(5).standard_normal((1, 8, 16, 16)).astype(np.float32)
    expected = ort_run(onnx_path, {"x": x})["logits"]
    net = cv2.dnn.readNetFromCaffe(str(tmp_path / f"{name}_hand.prototxt"), str(out))
    net.setInput(x)
    got = net.forward()
    np.testing.assert_allclose(got.reshape(expected.shape), expected, rtol=1e-4, atol=1e-4)
