"""Layers of popular Caffe forks: the engine against OpenCV (which implements
these forks' layers) and NumPy, shapes without running, and ONNX export run
in onnxruntime."""

import json

import cv2
import numpy as np
import onnx
import onnx.inliner
import pytest
from typer.testing import CliRunner

import blobcast
from blobcast.cli import app
from blobcast.converters.prototxt import net_from_text
from blobcast.engine import Net, blob_shapes

from ...conftest import ROOT, without_detection_output

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


def test_shuffle_channel_interleaves_as_shufflenet():
    text = ('layer { name: "data" type: "Input" top: "x" input_param { shape { dim: 1 dim: 6 dim: 1 dim: 1 } } }\n'
            'layer { name: "s" type: "ShuffleChannel" bottom: "x" top: "y" shuffle_channel_param { group: 2 } }')
    x = np.arange(6, dtype=np.float32).reshape(1, 6, 1, 1)
    y = Net(net_from_text(text, "<net>")).forward({"x": x})["y"]
    assert y.ravel().tolist() == [0, 3, 1, 4, 2, 5]  # out[j*G + i] = in[i*(C/G) + j]


def test_axpy_and_the_yolo_upsample():
    text = ('layer { name: "data" type: "Input" top: "a" top: "x" top: "y" input_param {'
            ' shape { dim: 2 dim: 3 } shape { dim: 2 dim: 3 dim: 4 dim: 5 } shape { dim: 2 dim: 3 dim: 4 dim: 5 } } }\n'
            'layer { name: "axpy" type: "Axpy" bottom: "a" bottom: "x" bottom: "y" top: "f" }\n'
            'layer { name: "up" type: "Upsample" bottom: "f" top: "up" upsample_param { scale: 2 } }')
    rng = np.random.RandomState(2)
    a, x, y = (rng.normal(size=s).astype(np.float32) for s in ((2, 3), (2, 3, 4, 5), (2, 3, 4, 5)))
    out = Net(net_from_text(text, "<net>")).forward({"a": a, "x": x, "y": y}, keep_all=True)
    np.testing.assert_allclose(out["f"], a[:, :, None, None] * x + y, rtol=1e-6)  # SENet: a*X + Y
    assert out["up"].shape == (2, 3, 8, 10)
    np.testing.assert_array_equal(out["up"][:, :, ::2, ::2], out["f"])
    np.testing.assert_array_equal(out["up"][:, :, 1::2, 1::2], out["f"])


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

def test_an_exported_permute_imports_back_as_a_permute(tmp_path):
    text = ('layer { name: "data" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 dim: 3 dim: 4 } } }\n'
            'layer { name: "p" type: "Permute" bottom: "x" top: "y" permute_param { order: 0 order: 3 } }')
    prototxt, weights = _with_weights(text, tmp_path, "permute")
    assert runner.invoke(app, ["convert", str(weights), str(tmp_path / "p.onnx")]).exit_code == 0
    back = runner.invoke(app, ["convert", str(tmp_path / "p.onnx"), str(tmp_path / "back.caffemodel"),
                               "--json"])
    assert back.exit_code == 0, back.output
    layer = blobcast.load(tmp_path / "back.caffemodel")["p"]
    assert layer.type == "Permute" and list(layer.type_params.order) == [0, 3, 1, 2]


SEGNET = '''layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 9 dim: 10 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" top: "pool_mask"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "decode" type: "Convolution" bottom: "pool" top: "decode"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "unpool" type: "Upsample" bottom: "decode" bottom: "pool_mask" top: "unpool"
        upsample_param { scale: 2 pad_out_h: true } }
layer { name: "unpool_hw" type: "Upsample" bottom: "decode" bottom: "pool_mask" top: "unpool_hw"
        upsample_param { upsample_h: 9 upsample_w: 10 } }
'''


def _caffe_max_pool_with_mask(x, kernel, stride):
    """pooling_layer.cpp's MAX loop with its mask, written out (no padding)."""
    n, c, height, width = x.shape
    out_h, out_w = -(-(height - kernel) // stride) + 1, -(-(width - kernel) // stride) + 1
    top, mask = np.full((n, c, out_h, out_w), -np.inf, np.float32), np.full((n, c, out_h, out_w), -1.0, np.float32)
    for i in range(out_h):
        for j in range(out_w):
            for h in range(i * stride, min(i * stride + kernel, height)):
                for w in range(j * stride, min(j * stride + kernel, width)):
                    better = x[:, :, h, w] > top[:, :, i, j]
                    top[:, :, i, j] = np.where(better, x[:, :, h, w], top[:, :, i, j])
                    mask[:, :, i, j] = np.where(better, h * width + w, mask[:, :, i, j])
    return top, mask


def test_segnet_max_unpool_as_the_fork_computes_it(tmp_path):
    prototxt, weights = _with_weights(SEGNET, tmp_path, "segnet")
    model = blobcast.load(weights, prototxt=prototxt)
    x = np.random.RandomState(2).normal(size=(2, 3, 9, 10)).astype(np.float32)
    x[0, 0, :2, :2] = 1.5  # a tie: the first position in the window wins
    ours = Net(model).forward({"data": x}, keep_all=True)
    pooled, mask = _caffe_max_pool_with_mask(ours["conv"], 2, 2)
    np.testing.assert_array_equal(ours["pool"], pooled)
    np.testing.assert_array_equal(ours["pool_mask"], mask)
    for name, size in (("unpool", (9, 10)), ("unpool_hw", (9, 10))):
        expected = np.zeros((2, 4) + size, np.float32)
        for n in range(2):
            for ch in range(4):
                plane = expected[n, ch].reshape(-1)
                for i, position in enumerate(mask[n, ch].reshape(-1)):  # upsample_layer.cpp
                    plane[int(position)] = ours["decode"][n, ch].reshape(-1)[i]
        np.testing.assert_array_equal(ours[name], expected, err_msg=name)
    # ONNX: MaxPool's indices and MaxUnpool, in functions; back to the same layers
    result = runner.invoke(app, ["convert", str(weights), str(tmp_path / "segnet.onnx"), "--prototxt",
                                 str(prototxt), "--strict", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["forward"]["passed"]
    inlined = onnx.inliner.inline_local_functions(onnx.load(tmp_path / "segnet.onnx"))
    assert {"MaxPool", "MaxUnpool"} <= {node.op_type for node in inlined.graph.node}
    back = blobcast.load(tmp_path / "segnet.onnx")
    assert back["pool"].tops == ["pool", "pool_mask"] and back["unpool"].type == "Upsample"
    np.testing.assert_array_equal(Net(back).forward({"data": x})["unpool"], ours["unpool"])


def test_a_mask_outside_the_upsampled_plane_is_refused():
    text = SEGNET.replace("pad_out_h: true", "upsample_h: 4 upsample_w: 4")
    model = net_from_text(text, "<net>")
    with pytest.raises(blobcast.BlobcastError, match="outside the 4x4 output"):
        Net(model, random_weights=1).forward({"data": np.ones((2, 3, 9, 10), np.float32)})


SSD = ROOT / "fixtures" / "caffe" / "ssd"


def test_the_ssd_forks_own_blobs_are_reproduced():
    # Written by weiliu89/caffe itself (fixtures/caffe/MANIFEST.md): Normalize in
    # all four settings, Permute (partial and full orders), PriorBox with every
    # setting (several and fractional min/max sizes, flip, clip, 1 or 4
    # variances or none, step, step_h/step_w, img_size, img_h/img_w, offset,
    # non-square maps), Concat, Reshape, Softmax, Flatten.
    model = blobcast.load(SSD / "synth_a.caffemodel", prototxt=SSD / "synth_a.prototxt")
    # DetectionOutput's blobs (det_*) are the next test's
    ours = Net(without_detection_output(model)).forward(
        {"data": np.load(SSD / "synth_a_input_data.npy")}, keep_all=True)
    golden = np.load(SSD / "synth_a_blobs.npz")
    compared = 0
    for name in golden.files:
        if name.startswith("det_"):
            continue
        tolerance = 0.0 if "priorbox" in name or name.startswith("pb_") else 1e-5
        np.testing.assert_allclose(ours[name], golden[name], atol=tolerance, rtol=tolerance, err_msg=name)
        compared += 1
    assert compared == 50


def test_ssd_priors_and_normalize_export_to_standard_onnx(tmp_path):
    model = blobcast.load(SSD / "synth_a.caffemodel", prototxt=SSD / "synth_a.prototxt")
    model.layers = [layer for layer in model.layers if layer.type != "DetectionOutput"]
    weights = tmp_path / "ssd_head.caffemodel"
    blobcast.save(model, weights)
    result = runner.invoke(app, ["convert", str(weights), str(tmp_path / "ssd_head.onnx"), "--strict",
                                 "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["forward"]["passed"]  # onnxruntime agrees with the engine


@pytest.mark.slow
def test_detection_output_matches_the_ssd_fork(ssd_synth_a_blobs):
    # Eleven DetectionOutput variants of the fork's own net: CENTER_SIZE, CORNER
    # and CORNER_SIZE codes, variance_encoded_in_target, top_k and keep_top_k,
    # eta, another background label, no confidence threshold, nothing detected.
    ours = ssd_synth_a_blobs
    golden = np.load(SSD / "synth_a_blobs.npz")
    names = [name for name in golden.files if name.startswith("det_")]
    assert len(names) == 11
    for name in names:  # the same rows in the same order
        assert ours[name].shape == golden[name].shape, name
        np.testing.assert_allclose(ours[name], golden[name], atol=3e-6, rtol=1e-5, err_msg=name)
    assert golden["det_empty"][0, 0].tolist() == [[i, -1, -1, -1, -1, -1, -1] for i in range(2)]
    assert ours["det_all"].shape == (1, 1, 2894, 7)


def test_detection_output_ties_share_location_and_backgrounds():
    model = blobcast.load(SSD / "synth_b_detout.caffemodel", prototxt=SSD / "synth_b_detout.prototxt")
    net = Net(model)
    inputs = {name: np.load(SSD / f"synth_b_detout_input_{name}.npy") for name in net.inputs}
    ours = net.forward(inputs, keep_all=True)
    golden = np.load(SSD / "synth_b_detout_blobs.npz")
    exact = ["b_ties_topk2", "b_ties_all", "b_nms0", "b_nms1", "b_corner_size_vit"]
    for name in exact:  # stable ties: lower prior index first, as the fork's stable_sort
        np.testing.assert_allclose(ours[name], golden[name], atol=3e-6, err_msg=name)
    for name in ("b_center", "b_noshare", "b_noshare_nobg"):
        # Tied scores at a keep_top_k cut: the fork's unstable std::sort orders
        # them its own way; the rows kept are the same.
        rows, theirs = ours[name].reshape(-1, 7), golden[name].reshape(-1, 7)
        np.testing.assert_allclose(np.sort(rows, axis=0), np.sort(theirs, axis=0), atol=3e-6, err_msg=name)
    # only image 0 has detections above the threshold
    assert set(ours["b_center"][0, 0, :, 0].tolist()) == {0.0}


def _caffe_interp(x, top, left, height, width, out_h, out_w):
    """util/interp.cpp's loop, written out: float32 ratios, aligned corners."""
    out = np.empty(x.shape[:2] + (out_h, out_w), np.float32)
    rh = np.float32(height - 1) / np.float32(out_h - 1) if out_h > 1 else np.float32(0)
    rw = np.float32(width - 1) / np.float32(out_w - 1) if out_w > 1 else np.float32(0)
    for h2 in range(out_h):
        h1r = rh * np.float32(h2)
        h1 = int(h1r)
        h1p = 1 if h1 < height - 1 else 0
        lh = h1r - np.float32(h1)
        for w2 in range(out_w):
            w1r = rw * np.float32(w2)
            w1 = int(w1r)
            w1p = 1 if w1 < width - 1 else 0
            lw = w1r - np.float32(w1)
            p = x[:, :, top + h1:top + h1 + h1p + 1, left + w1:left + w1 + w1p + 1]
            p00, p01 = p[:, :, 0, 0], p[:, :, 0, -1]
            p10, p11 = p[:, :, -1, 0], p[:, :, -1, -1]
            out[:, :, h2, w2] = (1 - lh) * ((1 - lw) * p00 + lw * p01) + lh * ((1 - lw) * p10 + lw * p11)
    return out


INTERP = '''layer { name: "data" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 dim: 5 dim: 7 } } }
layer { name: "hw" type: "Interp" bottom: "x" top: "hw" interp_param { height: 11 width: 9 } }
layer { name: "zoom" type: "Interp" bottom: "x" top: "zoom" interp_param { zoom_factor: 3 } }
layer { name: "shrink" type: "Interp" bottom: "x" top: "shrink" interp_param { shrink_factor: 2 } }
layer { name: "both" type: "Interp" bottom: "x" top: "both" interp_param { shrink_factor: 2 zoom_factor: 3 } }
layer { name: "padded" type: "Interp" bottom: "x" top: "padded" interp_param { pad_beg: -1 pad_end: -1 zoom_factor: 2 } }
'''


def test_interp_as_pspnet_computes_it(tmp_path):
    x = np.random.RandomState(0).normal(size=(1, 2, 5, 7)).astype(np.float32)
    ours = Net(net_from_text(INTERP, "<net>")).forward({"x": x}, keep_all=True)
    cases = {"hw": (0, 0, 5, 7, 11, 9), "zoom": (0, 0, 5, 7, 13, 19), "shrink": (0, 0, 5, 7, 3, 4),
             "both": (0, 0, 5, 7, 7, 10), "padded": (1, 1, 3, 5, 5, 9)}
    for name, geometry in cases.items():
        np.testing.assert_allclose(ours[name], _caffe_interp(x, *geometry), atol=1e-6, err_msg=name)
    # OpenCV implements Interp without shrink_factor and padding.
    only = "\n".join(INTERP.splitlines()[:3])
    (tmp_path / "interp.prototxt").write_text(only)
    reference = cv2.dnn.readNetFromCaffe(str(tmp_path / "interp.prototxt"))
    reference.setInput(x)
    for name, theirs in zip(("hw", "zoom"), reference.forward(["hw", "zoom"])):
        np.testing.assert_allclose(ours[name], theirs, atol=1e-6, err_msg=name)
    # and onnxruntime runs its export (Slice + Resize with aligned corners)
    prototxt, weights = _with_weights(INTERP, tmp_path, "interp")
    result = runner.invoke(app, ["convert", str(weights), str(tmp_path / "interp.onnx"), "--strict", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["forward"]["outputs"] == 5
