"""The forks' Upsample (YOLO's nearest, SegNet's max-unpool) and PSPNet's Interp,
against the forks' own arithmetic."""

import json

import cv2
import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

import blobcast
from blobcast.cli import app
from blobcast.converters.prototxt import net_from_text
from blobcast.engine import Net

from .test_fork_layers import _with_weights

runner = CliRunner()


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
