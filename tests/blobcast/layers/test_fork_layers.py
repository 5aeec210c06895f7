"""A MobileNet-SSD head of several forks' layers (depthwise convolutions,
ReLU6, ShuffleChannel, Normalize, Permute): the engine against OpenCV (which
implements these forks' layers), and ONNX export run in onnxruntime. Each
layer's own tests are in its family's file."""

import json

import cv2
import numpy as np
import onnx
import onnx.inliner
from typer.testing import CliRunner

import blobcast
from blobcast.cli import app
from blobcast.converters.prototxt import net_from_text
from blobcast.engine import Net
from blobcast.shapes import blob_shapes

runner = CliRunner()

MOBILE_SSD_HEAD = '''name: "forks"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 8 dim: 10 dim: 12 } } }
layer { name: "dw" type: "ConvolutionDepthwise" bottom: "data" top: "dw"
        convolution_param { num_output: 8 group: 8 kernel_size: 3 stride: 1 pad: 1 } }
layer { name: "dw2" type: "DepthwiseConvolution" bottom: "dw" top: "dw2"
        convolution_param { num_output: 8 group: 8 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "relu6" type: "ReLU6" bottom: "dw2" top: "relu6" }
layer { name: "shuffle" type: "ShuffleChannel" bottom: "relu6" top: "shuffle"
        shuffle_channel_param { group: 2 } }
layer { name: "norm" type: "Normalize" bottom: "shuffle" top: "norm"
        norm_param { across_spatial: false channel_shared: false
                     scale_filler { type: "constant" value: 20 } } }
layer { name: "norm_all" type: "Normalize" bottom: "shuffle" top: "norm_all"
        norm_param { across_spatial: true channel_shared: true eps: 0.001 } }
layer { name: "permute" type: "Permute" bottom: "norm" top: "permute" permute_param { order: 0 order: 2 order: 3 order: 1 } }
'''


def _with_weights(text: str, tmp_path, name: str = "forks"):
    """The net with seeded random weights from its fillers, saved as prototxt + caffemodel."""
    model = net_from_text(text, "<forks>")
    net = Net(model, random_weights=3)
    net.forward({n: np.zeros(s, np.float32) for n, s in net.inputs.items()})  # makes the weights
    for layer, op in zip(net.layers, net._ops):
        layer.blobs = [blobcast.Blob(np.asarray(w, np.float32)) for w in op.weights]
    prototxt, weights = tmp_path / f"{name}.prototxt", tmp_path / f"{name}.caffemodel"
    prototxt.write_text(text)
    blobcast.save(model, weights)
    return prototxt, weights


def test_fork_layers_match_opencv(tmp_path):
    prototxt, weights = _with_weights(MOBILE_SSD_HEAD, tmp_path)
    model = blobcast.load(weights, prototxt=prototxt)
    x = np.random.RandomState(1).normal(0, 1, (2, 8, 10, 12)).astype(np.float32)
    ours = Net(model).forward({"data": x}, keep_all=True)
    # OpenCV knows ConvolutionDepthwise (as a Convolution) but not the other
    # fork's DepthwiseConvolution: its copy of the net names that one Convolution.
    opencv_net = tmp_path / "opencv.prototxt"
    opencv_net.write_text(prototxt.read_text().replace('"DepthwiseConvolution"', '"Convolution"'))
    reference = cv2.dnn.readNetFromCaffe(str(opencv_net), str(weights))
    reference.setInput(x)
    names = ["dw", "dw2", "relu6", "shuffle", "norm", "norm_all", "permute"]
    for name, theirs in zip(names, reference.forward(names)):
        np.testing.assert_allclose(ours[name], theirs, atol=2e-5, rtol=1e-4, err_msg=name)
    assert ours["relu6"].min() >= 0 and ours["relu6"].max() <= 6
    assert ours["permute"].shape == (2, 10, 12, 8)
    # shapes without running agree with the pass
    _, shapes = blob_shapes(model)
    assert shapes == {name: value.shape for name, value in ours.items()}


def test_fork_layers_export_to_standard_onnx_that_onnxruntime_runs(tmp_path):
    text = MOBILE_SSD_HEAD + (
        'layer { name: "up" type: "Upsample" bottom: "relu6" top: "up" upsample_param { scale: 2 } }\n')
    prototxt, weights = _with_weights(text, tmp_path)
    destination = tmp_path / "forks.onnx"
    result = runner.invoke(app, ["convert", str(weights), str(destination), "--prototxt", str(prototxt),
                                 "--strict", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["forward"]["passed"] and report["forward"]["outputs"] == 3
    model = onnx.load(destination)
    # fork layers are calls of model-local functions whose bodies are standard ops
    assert {node.domain for node in model.graph.node} <= {"", "ai.blobcast.caffe"}
    assert {node.domain or "" for f in model.functions for node in f.node} == {""}
    inlined = onnx.inliner.inline_local_functions(model)
    assert {node.domain for node in inlined.graph.node} == {""}
    assert {"Clip", "Transpose", "Resize", "ReduceSumSquare", "Sqrt"} <= {n.op_type for n in inlined.graph.node}
