"""Real third-party Caffe models (fixtures/real/, each with its SOURCE.md):
the engine against OpenCV, and the ONNX export against onnxruntime."""

import json

import cv2
import numpy as np
import onnx
from typer.testing import CliRunner

import blobcast
from blobcast.cli import app
from blobcast.engine import Net

from .conftest import ROOT

runner = CliRunner()
YU = ROOT / "fixtures" / "real" / "yufacedetectnet"
YU_WEIGHTS, YU_NET = YU / "yufacedetectnet-open-v1.caffemodel", YU / "yufacedetectnet-open-v1.prototxt"


def _image():
    return np.random.RandomState(0).uniform(0, 255, size=(1, 3, 240, 320)).astype(np.float32)


def test_a_real_ssd_face_detector_runs_as_opencv_runs_it():
    # libfacedetection's YuFaceDetectNet: Normalize, Permute, PriorBox, DetectionOutput
    x = _image()
    ours = Net(blobcast.load(YU_WEIGHTS, prototxt=YU_NET)).forward({"data": x}, keep_all=True)
    reference = cv2.dnn.readNetFromCaffe(str(YU_NET), str(YU_WEIGHTS))
    reference.setInput(x)
    names = ["conv3_3_norm", "mbox_loc", "mbox_conf_flatten", "mbox_priorbox", "detection_out"]
    for name, theirs in zip(names, reference.forward(names)):
        scale = max(1.0, float(np.abs(theirs).max()))
        np.testing.assert_allclose(ours[name], theirs.reshape(ours[name].shape), atol=2e-6 * scale,
                                   rtol=1e-4, err_msg=name)
    assert ours["detection_out"].shape == (1, 1, 50, 7)  # keep_top_k rows, as OpenCV pads to


def test_the_face_detector_converts_to_onnx_and_back(tmp_path):
    result = runner.invoke(app, ["convert", str(YU_WEIGHTS), str(tmp_path / "yu.onnx"), "--prototxt",
                                 str(YU_NET), "--strict", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["forward"]["passed"]  # onnxruntime's detections agree with the engine's
    calls = {node.op_type for node in onnx.load(tmp_path / "yu.onnx").graph.node}
    assert {"DetectionOutput", "PriorBox", "Normalize"} <= calls
    back = runner.invoke(app, ["convert", str(tmp_path / "yu.onnx"), str(tmp_path / "back.caffemodel"),
                               "--json"])
    assert back.exit_code == 0, back.output
    model = blobcast.load(tmp_path / "back.caffemodel")
    assert {"DetectionOutput", "PriorBox", "Normalize"} <= {layer.type for layer in model.layers}
