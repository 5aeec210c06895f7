"""SSD's PriorBox and DetectionOutput against the SSD fork's own blobs, and
Faster R-CNN's Proposal against OpenCV."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import blobcast
from blobcast.cli import app
from blobcast.engine import Net
from blobcast.engine.random_fill import fill_random_weights

from ...conftest import ROOT, without_detection_output

runner = CliRunner()
REAL = ROOT / "fixtures" / "real"


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


def _proposal_net(tmp_path):
    """py-faster-rcnn's ZF test net up to its proposals, the Python proposal
    layer replaced by the C++ `Proposal` OpenCV's own Faster R-CNN sample uses."""
    text = (REAL / "py-faster-rcnn" / "ZF_faster_rcnn_end2end_test.prototxt").read_text()
    start = text.index("layer {\n  name: 'proposal'")
    proposal = ("layer { name: 'proposal' type: 'Proposal' bottom: 'rpn_cls_prob_reshape' "
                "bottom: 'rpn_bbox_pred' bottom: 'im_info' top: 'rois' proposal_param { "
                "ratio: 0.5 ratio: 1.0 ratio: 2.0 scale: 8 scale: 16 scale: 32 post_nms_topn: 50 } }\n")
    path = tmp_path / "zf_proposal.prototxt"
    path.write_text(text[:start] + proposal)
    model = blobcast.load(path)
    fill_random_weights(model, seed=5)
    for layer in model.layers:  # objectness and deltas of a useful size
        if layer.name in ("rpn_cls_score", "rpn_bbox_pred"):
            layer.blobs = [blobcast.Blob(b.data.numpy() * np.float32(0.05)) for b in layer.blobs]
    weights = tmp_path / "zf_proposal.caffemodel"
    blobcast.save(model, weights)
    return path, weights


@pytest.mark.slow
def test_proposal_gives_opencvs_proposals_on_the_zf_rpn(tmp_path):
    import cv2

    prototxt, weights = _proposal_net(tmp_path)
    x = np.random.RandomState(6).uniform(0, 255, (1, 3, 224, 224)).astype(np.float32)
    im_info = np.array([[224, 224, 1]], np.float32)
    ours = Net(blobcast.load(weights, prototxt=prototxt)).forward({"data": x, "im_info": im_info})
    reference = cv2.dnn.readNetFromCaffe(str(prototxt), str(weights))
    reference.setInput(x, "data")
    reference.setInput(im_info, "im_info")
    (theirs,) = reference.forward(["proposal"])
    assert ours["rois"].shape == (50, 5) and np.count_nonzero(ours["rois"][:, 3]) > 10
    np.testing.assert_allclose(ours["rois"], theirs, rtol=1e-4, atol=2e-3)
