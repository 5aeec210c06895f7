"""Fast R-CNN's ROIPooling and R-FCN's PSROIPooling: the engine against the
forks' loops written out, OpenCV, and onnxruntime on their export."""

import json

import cv2
import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

import blobcast
from blobcast.cli import app
from blobcast.converters.onnx_versions import default_opset
from blobcast.converters.prototxt import net_from_text
from blobcast.engine import Net

runner = CliRunner()

NET = '''layer { name: "data" type: "Input" top: "data" top: "rois"
        input_param { shape { dim: 2 dim: 8 dim: 12 dim: 14 } shape { dim: 6 dim: 5 } } }
layer { name: "roi" type: "ROIPooling" bottom: "data" bottom: "rois" top: "roi"
        roi_pooling_param { pooled_h: 3 pooled_w: 2 spatial_scale: 0.25 } }
layer { name: "psroi" type: "PSROIPooling" bottom: "data" bottom: "rois" top: "psroi"
        psroi_pooling_param { output_dim: 2 group_size: 2 spatial_scale: 0.25 } }
'''
ROIS = np.array([[0, 0, 0, 55, 47], [1, 10, 6, 30, 22.5], [0, 18, 18, 17, 17],
                 [1, -4, 2, 80, 90], [0, 2.5, 3.5, 6, 9], [1, 40, 30, 52, 44]], np.float32)


def _c_round(value):
    return float(np.sign(value) * np.floor(abs(value) + 0.5))


def _roi_pooling(x, rois, pooled_h, pooled_w, scale):
    """roi_pooling_layer.cpp's Forward_cpu, written out."""
    out = np.zeros((len(rois), x.shape[1], pooled_h, pooled_w), np.float32)
    height, width = x.shape[2:]
    for r, (b, x1, y1, x2, y2) in enumerate(rois):
        sw, sh = _c_round(np.float32(x1) * np.float32(scale)), _c_round(np.float32(y1) * np.float32(scale))
        ew, eh = _c_round(np.float32(x2) * np.float32(scale)), _c_round(np.float32(y2) * np.float32(scale))
        bin_h = np.float32(max(eh - sh + 1, 1)) / np.float32(pooled_h)
        bin_w = np.float32(max(ew - sw + 1, 1)) / np.float32(pooled_w)
        for i in range(pooled_h):
            for j in range(pooled_w):
                h0 = min(max(int(np.floor(np.float32(i) * bin_h)) + int(sh), 0), height)
                h1 = min(max(int(np.ceil(np.float32(i + 1) * bin_h)) + int(sh), 0), height)
                w0 = min(max(int(np.floor(np.float32(j) * bin_w)) + int(sw), 0), width)
                w1 = min(max(int(np.ceil(np.float32(j + 1) * bin_w)) + int(sw), 0), width)
                if h1 > h0 and w1 > w0:
                    out[r, :, i, j] = x[int(b), :, h0:h1, w0:w1].max(axis=(1, 2))
    return out


def _psroi_pooling(x, rois, dim, group, scale):
    """psroi_pooling_layer.cu's kernel, written out per output element."""
    out = np.zeros((len(rois), dim, group, group), np.float32)
    height, width = x.shape[2:]
    scale = np.float32(scale)
    for r, (b, x1, y1, x2, y2) in enumerate(rois):
        sw, sh = np.float32(_c_round(x1)) * scale, np.float32(_c_round(y1)) * scale
        ew, eh = np.float32(_c_round(x2) + 1) * scale, np.float32(_c_round(y2) + 1) * scale
        bin_h = max(eh - sh, np.float32(0.1)) / np.float32(group)
        bin_w = max(ew - sw, np.float32(0.1)) / np.float32(group)
        for k in range(dim):
            for i in range(group):
                for j in range(group):
                    h0 = min(max(int(np.floor(np.float32(i) * bin_h + sh)), 0), height)
                    h1 = min(max(int(np.ceil(np.float32(i + 1) * bin_h + sh)), 0), height)
                    w0 = min(max(int(np.floor(np.float32(j) * bin_w + sw)), 0), width)
                    w1 = min(max(int(np.ceil(np.float32(j + 1) * bin_w + sw)), 0), width)
                    if h1 > h0 and w1 > w0:
                        channel = (k * group + i) * group + j
                        out[r, k, i, j] = x[int(b), channel, h0:h1, w0:w1].mean()
    return out


def test_region_pooling_as_the_forks_compute_it(tmp_path):
    x = np.random.RandomState(0).normal(size=(2, 8, 12, 14)).astype(np.float32)
    ours = Net(net_from_text(NET, "<net>")).forward({"data": x, "rois": ROIS})
    np.testing.assert_array_equal(ours["roi"], _roi_pooling(x, ROIS, 3, 2, 0.25))
    np.testing.assert_allclose(ours["psroi"], _psroi_pooling(x, ROIS, 2, 2, 0.25), atol=1e-6)
    # OpenCV runs Fast R-CNN's ROIPooling the same way
    (tmp_path / "roi.prototxt").write_text("\n".join(NET.splitlines()[:4]))
    reference = cv2.dnn.readNetFromCaffe(str(tmp_path / "roi.prototxt"))
    reference.setInput(x, "data")
    reference.setInput(ROIS.reshape(6, 5, 1, 1), "rois")
    np.testing.assert_array_equal(ours["roi"], reference.forward("roi"))


def test_region_pooling_exports_to_standard_onnx_and_comes_back(tmp_path):
    model = net_from_text(NET, "<net>")
    blobcast.save(model, tmp_path / "rois.caffemodel")
    result = runner.invoke(app, ["convert", str(tmp_path / "rois.caffemodel"), str(tmp_path / "rois.onnx"),
                                 "--strict", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["forward"]["passed"]
    written = onnx.load(tmp_path / "rois.onnx")
    # onnxruntime runs MaxRoiPool up to opset 21 (older onnx or onnxruntime: their newest)
    assert written.opset_import[0].version == default_opset(21)
    op_types = {node.op_type for node in written.graph.node}
    op_types |= {node.op_type for function in written.functions for node in function.node}
    assert {"MaxRoiPool", "CumSum", "GatherND"} <= op_types
    back = blobcast.load(tmp_path / "rois.onnx")
    assert back["roi"].type == "ROIPooling" and back["psroi"].type_params.group_size == 2
    if onnx.defs.onnx_opset_version() >= 26:
        with pytest.warns(blobcast.BlobcastWarning, match="no MaxRoiPool for opset 26"):
            blobcast.save(model, tmp_path / "newest.onnx", opset=26)


@pytest.mark.parametrize("pooled, message", [(100000, "over the memory budget"),
                                             (2000, "more than the 2000000 bins blobcast pools")])
def test_region_pooling_that_would_not_fit_or_not_end_is_refused(pooled, message):
    text = NET.replace("pooled_h: 3 pooled_w: 2", f"pooled_h: {pooled} pooled_w: {pooled}")
    text = "\n".join(text.splitlines()[:4])
    with pytest.raises(blobcast.BlobcastError, match=message):
        Net(net_from_text(text, "<net>")).forward({"data": np.zeros((2, 8, 12, 14), np.float32), "rois": ROIS})
