"""The engine against real Caffe's recorded forward passes (float32 tolerance)."""

import numpy as np
import pytest

import blobcast
from blobcast.check import compare_arrays
from blobcast.engine import Net, known_layer_types

from ...conftest import CAFFE, SOLVER_TYPES

ATOL, RTOL = 1e-5, 1e-3


def run_all(model, inputs):
    return Net(model).forward(inputs, keep_all=True)


def assert_close(name, ours, caffes):
    result = compare_arrays(name, ours, caffes, ATOL, RTOL)
    assert result.passed, (name, result)


def test_every_blob_of_the_69_layer_zoo_matches_caffe():
    model = blobcast.load(CAFFE / "zoo" / "zoo.caffemodel", prototxt=CAFFE / "zoo" / "zoo_deploy.prototxt")
    recorded = np.load(CAFFE / "zoo" / "zoo_blobs.npz")
    blobs = run_all(model, {"data": np.load(CAFFE / "zoo" / "zoo_input.npy")})
    assert len(recorded.files) == 72
    for name in recorded.files:
        assert_close(name, blobs[name], recorded[name])


def test_the_zoo_from_caffes_hdf5_snapshot_too():
    model = blobcast.load(CAFFE / "zoo" / "zoo.caffemodel.h5", prototxt=CAFFE / "zoo" / "zoo_deploy.prototxt")
    recorded = np.load(CAFFE / "zoo" / "zoo_blobs.npz")
    outputs = Net(model).forward({"data": np.load(CAFFE / "zoo" / "zoo_input.npy")})
    assert set(outputs) <= set(recorded.files)
    for name, value in outputs.items():
        assert_close(name, value, recorded[name])


@pytest.mark.parametrize("kind", SOLVER_TYPES)
@pytest.mark.parametrize("snapshot", ["bp", "h5"])
def test_lenet_snapshots_match_caffe(kind, snapshot):
    name = (f"{kind}_bp_iter_5.caffemodel" if snapshot == "bp" else f"{kind}_h5_iter_5.caffemodel.h5")
    model = blobcast.load(CAFFE / "lenet" / "snapshots" / name,
                          prototxt=CAFFE / "lenet" / "lenet_deploy.prototxt")
    recorded = np.load(CAFFE / "lenet" / "lenet_forward.npz")
    key = name.replace(".", "_")
    blobs = run_all(model, {"data": recorded["input"]})
    assert_close("ip2", blobs["ip2"], recorded[f"{key}__ip2"])
    assert_close("prob", blobs["prob"], recorded[f"{key}__prob"])


@pytest.mark.parametrize("name", ["shared_bp_iter_4.caffemodel", "shared_h5_iter_4.caffemodel.h5"])
def test_shared_weight_nets_match_caffe(name):
    model = blobcast.load(CAFFE / "shared" / "snapshots" / name,
                          prototxt=CAFFE / "shared" / "shared_deploy.prototxt")
    recorded = np.load(CAFFE / "shared" / "shared_forward.npz")
    blobs = run_all(model, {"data": recorded["input"]})
    for blob in ("ip_a", "tanh_a", "ip_b"):
        assert_close(blob, blobs[blob], recorded[f"{name.replace('.', '_')}__{blob}"])


@pytest.mark.parametrize("variant", ["slash", "slash_nested"])
def test_slash_named_nets_match_caffe_blob_for_blob(variant):
    folder = CAFFE / "slash"
    model = blobcast.load(folder / "snapshots" / f"{variant}_bp_iter_2.caffemodel",
                          prototxt=folder / f"{variant}_deploy.prototxt")
    recorded = np.load(folder / f"{variant}_bp_forward.npz")
    blobs = run_all(model, {"data": recorded["input"]})
    names = [n for n in recorded.files if n != "input"]
    assert len(names) >= 7
    for name in names:  # in-place layers leave their final value under the name, as in Caffe
        assert_close(name, blobs[name], recorded[name])


@pytest.mark.parametrize("net", ["lenet_v1", "lenet_v0"])
def test_legacy_nets_match_caffe(net):
    model = blobcast.load(CAFFE / "v1" / f"{net}.caffemodel", prototxt=CAFFE / "v1" / f"{net}.prototxt")
    recorded = np.load(CAFFE / "v1" / "lenet_v1_forward.npz")
    outputs = Net(model).forward({"data": recorded["input"]})
    assert_close("prob", outputs["prob"], recorded["prob"])


def test_train_net_runs_with_data_layers_as_inputs_and_losses_reported():
    model = blobcast.load(CAFFE / "lenet" / "snapshots" / "sgd_bp_iter_5.caffemodel")
    net = Net(model)  # the TRAIN net Caffe saved, run in the TEST phase
    # The label is read only by the loss, which is not run: not an input of the deploy net.
    assert net.inputs == {"data": [8, 1, 12, 12]}
    assert [(s.name, s.type) for s in net.skipped] == [("data", "DummyData"), ("loss", "SoftmaxWithLoss"),
                                                       ("label", "input")]
    outputs = net.forward({"data": np.zeros((8, 1, 12, 12), np.float32)})
    assert outputs["ip2"].shape == (8, 10)


def test_unknown_layer_type_lists_the_known_ones():
    model = blobcast.load(CAFFE / "lenet" / "lenet_deploy.prototxt")
    model["relu1"].type = "Mish"
    with pytest.raises(blobcast.BlobcastError, match="no 'Mish' layer; it runs: .*Convolution"):
        Net(model)
    assert "Deconvolution" in known_layer_types()
