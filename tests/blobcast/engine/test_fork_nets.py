"""Official fork nets (fixtures/real/, each with its SOURCE.md): ENet with
SegNet's BN and Upsample, caffe-fast-rcnn's Dropout scale_train, py-faster-rcnn's
Python-layer and ROI nets, and a real Python layer that imports caffe."""

import json
import sys

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

import blobcast
from blobcast.cli import app
from blobcast.engine import Net
from blobcast.engine.random_fill import fill_random_weights

from ...conftest import ROOT

runner = CliRunner()
REAL = ROOT / "fixtures" / "real"


@pytest.mark.slow
def test_enet_with_segnet_bn_and_upsample_runs_and_exports(tmp_path):
    model = blobcast.load(REAL / "enet" / "enet_deploy_final.prototxt")
    shape = [1, 3, 64, 128]
    fill_random_weights(model, {"data": shape}, seed=1)
    bn = next(layer for layer in model.layers if layer.type == "BN")
    assert bn.spec.bn_param.bn_mode == "INFERENCE" and len(bn.blobs) == 2
    x = np.random.RandomState(0).normal(0, 1, shape).astype(np.float32)
    before = Net(blobcast.Model(net=model.net, layers=model.layers[:model.layers.index(bn)]))
    x_bn = before.forward({"data": x}, keep_all=True)[bn.bottoms[0]]
    after = Net(blobcast.Model(net=model.net, layers=model.layers[:model.layers.index(bn) + 1]))
    scale, shift = (b.data.numpy() for b in bn.blobs)
    np.testing.assert_allclose(after.forward({"data": x}, keep_all=True)[bn.tops[0]],
                               x_bn * scale + shift, rtol=1e-6, atol=1e-6)
    blobcast.save(model, tmp_path / "enet.caffemodel")
    result = runner.invoke(app, ["convert", str(tmp_path / "enet.caffemodel"), str(tmp_path / "enet.onnx"),
                                 "--input", "data=1,3,64,128", "--atol", "0.1", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["forward"]["passed"]


def test_enet_with_python_dropout_layers_opens_and_names_them():
    model = blobcast.load(REAL / "enet" / "enet_deploy.prototxt")
    assert sum(layer.type == "BN" for layer in model.layers) == 86
    net = Net(model, skip_unrunnable=True)
    assert len(net.unrun) == 27 and {layer.type for layer in net.unrun} == {"Python"}


def test_a_python_layer_imports_caffe_where_pycaffe_is_absent():
    folder = REAL / "pycaffe-python-layer"
    model = blobcast.load(folder / "linreg.prototxt")
    assert "caffe" not in sys.modules
    net = Net(model, allow_python_layers=True, python_path=[str(folder)], random_weights=0)
    blobs = net.forward({}, keep_all=True) if not net.inputs else None
    if blobs is None:  # the DummyData tops are inputs
        rng = np.random.RandomState(0)
        values = {name: rng.normal(0, 1, shape).astype(np.float32) for name, shape in net.inputs.items()}
        blobs = net.forward(values, keep_all=True)
    difference = (blobs["ipx"] - blobs["ipy"]).astype(np.float64)
    np.testing.assert_allclose(blobs["loss"].reshape(()), (difference ** 2).sum() / 10 / 2, rtol=1e-5)
    assert "caffe" not in sys.modules  # the stand-in was there only while the module was imported
    sys.modules.pop("pyloss", None)


@pytest.fixture(scope="module")
def zf_fast_rcnn(tmp_path_factory):
    model = blobcast.load(REAL / "py-faster-rcnn" / "ZF_fast_rcnn_test.prototxt")
    fill_random_weights(model, {"rois": [3, 5]}, seed=2)
    path = tmp_path_factory.mktemp("zf") / "zf.caffemodel"
    blobcast.save(model, path)
    return model, path


def _rois(tmp_path):
    rois = np.array([[0, 10, 10, 100, 120], [0, 0, 0, 223, 223], [0, 50.5, 60, 70, 90]], np.float32)
    np.save(tmp_path / "rois.npy", rois)
    return rois


@pytest.mark.slow
def test_fast_rcnn_scale_train_false_scales_at_test_time(zf_fast_rcnn, tmp_path):
    model, _ = zf_fast_rcnn
    drop = model.layer("drop6")
    assert not drop.spec.dropout_param.scale_train
    x = np.random.RandomState(0).normal(0, 50, (1, 3, 224, 224)).astype(np.float32)
    blobs = Net(model).forward({"data": x, "rois": _rois(tmp_path)}, keep_all=True)
    relu6 = Net(blobcast.Model(net=model.net, layers=[layer for layer in model.layers
                                                      if layer.name not in ("drop6", "fc7", "relu7",
                                                                            "drop7", "cls_score",
                                                                            "bbox_pred", "cls_prob")]))
    before = relu6.forward({"data": x, "rois": _rois(tmp_path)})["fc6"]
    np.testing.assert_array_equal(blobs["fc6"], before * np.float32(0.5))  # x * (1 - 0.5)


@pytest.mark.slow
def test_an_roi_net_converts_with_its_check_on_real_rois(zf_fast_rcnn, tmp_path):
    _, path = zf_fast_rcnn
    rois = _rois(tmp_path)
    refused = runner.invoke(app, ["convert", str(path), str(tmp_path / "a.onnx"), "--input", "rois=3,5"])
    assert refused.exit_code != 0 and "ROI" in refused.stderr  # random values are no ROIs
    result = runner.invoke(app, ["convert", str(path), str(tmp_path / "zf.onnx"), "--input",
                                 f"rois={tmp_path / 'rois.npy'}", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["forward"]["passed"]
    graph = onnx.load(tmp_path / "zf.onnx").graph
    rois_input = next(i for i in graph.input if i.name == "rois")
    assert [d.dim_value for d in rois_input.type.tensor_type.shape.dim] == list(rois.shape)


@pytest.mark.slow
def test_a_faster_rcnn_net_whose_input_feeds_only_a_python_layer_exports(tmp_path):
    model = blobcast.load(REAL / "py-faster-rcnn" / "ZF_faster_rcnn_end2end_test.prototxt")
    fill_random_weights(model, given_shapes={"rois": [300, 5]}, seed=3)
    blobcast.save(model, tmp_path / "frcnn.caffemodel")
    result = runner.invoke(app, ["convert", str(tmp_path / "frcnn.caffemodel"), str(tmp_path / "f.onnx"),
                                 "--shape", "rois=300,5", "--no-verify"])
    assert result.exit_code == 0, result.output
    graph = onnx.load(tmp_path / "f.onnx").graph
    assert [i.name for i in graph.input] == ["data", "im_info"]  # im_info: read by the Python layer
    (proposal,) = [node for node in graph.node if node.name == "proposal"]
    assert proposal.domain == "ai.blobcast" and list(proposal.input)[-1] == "im_info"
