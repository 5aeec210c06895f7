"""Real third-party Caffe models (fixtures/real/, each with its SOURCE.md):
the engine against OpenCV, and the ONNX export against onnxruntime."""

import json
import re

import cv2
import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

import blobcast
from blobcast.cli import app
from blobcast.engine import Net

from ..conftest import ROOT

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


@pytest.mark.slow
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


YOLO = ROOT / "fixtures" / "real" / "yoloface-500k"
YOLO_WEIGHTS, YOLO_NET = YOLO / "yoloface-500k-v2.caffemodel", YOLO / "yoloface-500k-v2.prototxt"
YOLO_OUTPUTS = ["layer71-conv", "layer83-conv", "layer95-conv"]


@pytest.mark.slow
def test_a_real_yolo_net_runs_as_opencv_runs_it_up_to_its_upsample(tmp_path):
    # group == channels convolutions and two-bottom Scale (SE gating) against OpenCV, which
    # cannot create the darknet forks' Upsample: it runs the net cut just before the first one
    x = np.random.RandomState(1).uniform(0, 1, size=(1, 3, 288, 352)).astype(np.float32)
    model = blobcast.load(YOLO_WEIGHTS, prototxt=YOLO_NET)
    ours = Net(model).forward({"data": x}, keep_all=True)
    first_upsample = next(i for i, layer in enumerate(model.layers) if layer.type == "Upsample")
    upsampled = model.layers[first_upsample].bottoms[0]
    model.layers = model.layers[:first_upsample]
    blobcast.save(model, tmp_path / "cut.caffemodel")
    blobcast.save(model, tmp_path / "cut.prototxt")
    reference = cv2.dnn.readNetFromCaffe(str(tmp_path / "cut.prototxt"), str(tmp_path / "cut.caffemodel"))
    reference.setInput(x)
    names = ["layer68-scale_channels", "layer71-conv"]
    for name, theirs in zip(names, reference.forward(names)):
        np.testing.assert_allclose(ours[name], theirs, atol=1e-4, rtol=1e-4, err_msg=name)
    # Upsample: each value repeated scale x scale times, as darknet's forks define it
    np.testing.assert_array_equal(ours["layer74-upsample"],
                                  ours[upsampled].repeat(2, axis=2).repeat(2, axis=3))
    assert ours["layer74-upsample"].shape[2:] == (18, 22)


@pytest.mark.slow
def test_the_yolo_net_converts_to_onnx_in_standard_ops_and_between_caffe_formats(tmp_path):
    result = runner.invoke(app, ["convert", str(YOLO_WEIGHTS), str(tmp_path / "y.onnx"), "--prototxt",
                                 str(YOLO_NET), "--strict", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["forward"]["passed"]
    model = onnx.load(tmp_path / "y.onnx")
    bodies = [node for function in model.functions for node in function.node]
    assert {node.domain for node in bodies} <= {""}  # fork layers in standard ops only
    assert [node.name for node in model.graph.node if node.domain] == ["layer74-upsample", "layer86-upsample"]
    assert "Resize" in {node.op_type for node in bodies}
    # .caffemodel -> .h5 -> .caffemodel gives back the very bytes
    for source, target in [(YOLO_WEIGHTS, tmp_path / "y.caffemodel.h5"),
                           (tmp_path / "y.caffemodel.h5", tmp_path / "y.caffemodel")]:
        step = runner.invoke(app, ["convert", str(source), str(target), "--json"])
        assert step.exit_code == 0, step.output
    assert (tmp_path / "y.caffemodel").read_bytes() == YOLO_WEIGHTS.read_bytes()


@pytest.mark.slow
def test_the_yolo_net_with_interp_for_its_upsamples_as_its_repository_instructs(tmp_path):
    # The repository's README tells MNN users to replace each Upsample with an Interp layer
    # of the upsampled height and width (PSPNet/DeepLab's bilinear, align-corners resize).
    # That edit of the real net: run against OpenCV (which has Interp), exported to ONNX and
    # run in onnxruntime, and imported back to Interp layers.
    from ..converters.test_onnx import ort_run

    text = YOLO_NET.read_text()
    for name, (height, width) in (("layer74-upsample", (18, 22)), ("layer86-upsample", (36, 44))):
        text = re.sub(rf'(name: "{name}"\s*)type: "Upsample"\s*upsample_param \{{[^}}]*\}}',
                      rf'\1type: "Interp" interp_param {{ height: {height} width: {width} }}', text)
    assert text.count('type: "Interp"') == 2 and 'type: "Upsample"' not in text
    net_path = tmp_path / "interp.prototxt"
    net_path.write_text(text)
    model = blobcast.load(YOLO_WEIGHTS, prototxt=net_path)
    x = np.random.RandomState(3).uniform(0, 1, size=(1, 3, 288, 352)).astype(np.float32)
    ours = Net(model).forward({"data": x})
    reference = cv2.dnn.readNetFromCaffe(str(net_path), str(YOLO_WEIGHTS))
    reference.setInput(x)
    for name, theirs in zip(YOLO_OUTPUTS, reference.forward(YOLO_OUTPUTS)):
        np.testing.assert_allclose(ours[name], theirs, atol=2e-4, rtol=1e-4, err_msg=name)
    result = runner.invoke(app, ["convert", str(YOLO_WEIGHTS), str(tmp_path / "i.onnx"), "--prototxt",
                                 str(net_path), "--strict", "--json"])
    assert result.exit_code == 0, result.output
    exported = ort_run(tmp_path / "i.onnx", {"data": x})
    for name in YOLO_OUTPUTS:
        np.testing.assert_allclose(exported[name], ours[name], atol=1e-4, rtol=1e-4, err_msg=name)
    back = runner.invoke(app, ["convert", str(tmp_path / "i.onnx"), str(tmp_path / "back.caffemodel"),
                               "--json"])
    assert back.exit_code == 0, back.output
    again = blobcast.load(tmp_path / "back.caffemodel", prototxt=tmp_path / "back.prototxt")
    assert [layer.type for layer in again.layers].count("Interp") == 2
