"""Data layers become net inputs in the phase that runs, also when they
belong to another phase: `caffe train` snapshots hold the TRAIN net, whose
only data layer is TRAIN-only (fixtures/real/cifar10-full-snapshot, a real
2014 snapshot of BVLC's CIFAR-10 example)."""

import json

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

import blobcast
from blobcast.cli import app
from blobcast.engine import Net, blob_shapes

from ...conftest import ROOT

runner = CliRunner()
SNAPSHOT = ROOT / "fixtures" / "real" / "cifar10-full-snapshot"
WEIGHTS = SNAPSHOT / "cifar10_full_iter_10000.caffemodel"


def test_a_training_snapshot_asks_for_the_image_size_its_database_holds(tmp_path):
    result = runner.invoke(app, ["convert", str(WEIGHTS), str(tmp_path / "c.onnx")])
    assert result.exit_code == 2  # bad input
    line = result.stderr.strip()
    assert "\n" not in line and "KeyError" not in line
    assert "'data'" in line and "'cifar' (Data)" in line and "--input data=SHAPE" in line
    assert "[100, 3, ?, ?]" in line  # batch_size from data_param, channels from conv1's weights
    assert not (tmp_path / "c.onnx").exists()


def test_a_training_snapshot_converts_to_onnx_with_the_shape_given(tmp_path):
    out = tmp_path / "c.onnx"
    result = runner.invoke(app, ["convert", str(WEIGHTS), str(out), "--input", "data=2,3,32,32",
                                 "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["forward"]["passed"]
    graph = onnx.load(out).graph
    assert [i.name for i in graph.input] == ["data"]  # the label is read only by the loss
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [2, 3, 32, 32]


def test_run_and_verify_take_the_snapshot_with_a_shape(tmp_path):
    x = np.random.RandomState(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    result = runner.invoke(app, ["run", str(WEIGHTS), "--input", f"data={tmp_path / 'x.npy'}",
                                 "--json"])
    assert result.exit_code == 0, result.output
    h5 = tmp_path / "c.caffemodel.h5"
    assert runner.invoke(app, ["convert", str(WEIGHTS), str(h5), "--input",
                               "data=1,3,32,32"]).exit_code == 0
    result = runner.invoke(app, ["verify", str(WEIGHTS), str(h5), "--input", "data=1,3,32,32",
                                 "--json"])
    assert result.exit_code == 0, result.output


CONV1 = """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 32 kernel_size: 5 stride: 1 pad: 2 } }
"""


# One case per data-layer type (and a Python layer with no bottoms): the
# settings and the shape they give, None where the data alone tells it.
DATA_LAYER_CASES = [
    ('type: "Data" data_param { batch_size: 7 } transform_param { crop_size: 24 }', [7, 3, 24, 24]),
    ('type: "ImageData" image_data_param { batch_size: 2 new_height: 30 new_width: 20 }',
     [2, 3, 30, 20]),
    ('type: "MemoryData" memory_data_param { batch_size: 4 channels: 3 height: 16 width: 12 }',
     [4, 3, 16, 12]),
    ('type: "WindowData" window_data_param { batch_size: 5 crop_size: 27 }', [5, 3, 27, 27]),
    ('type: "DummyData" dummy_data_param { shape { dim: 3 dim: 3 dim: 8 dim: 8 } }', [3, 3, 8, 8]),
    ('type: "AnnotatedData" data_param { batch_size: 6 } transform_param { crop_size: 11 }',
     [6, 3, 11, 11]),
    ('type: "HDF5Data" hdf5_data_param { batch_size: 3 }', None),  # sizes are in the HDF5 file
    ('type: "VideoData"', None),
    ('type: "DenseImageData"', None),
    ('type: "Python" python_param { module: "roi_data_layer.layer" layer: "RoIDataLayer" }', None),
]


def test_every_registered_data_layer_type_has_a_case():
    from blobcast.layers import SPECS

    cased = {text.split('"')[1] for text, _ in DATA_LAYER_CASES}
    assert {name for name, kind in SPECS.items() if kind.role == "data"} - cased == set()


@pytest.mark.parametrize(("data_layer", "shape"), DATA_LAYER_CASES)
@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_every_data_layer_type_feeds_the_net_its_shape(tmp_path, data_layer, shape, phase):
    net_text = tmp_path / "net.prototxt"
    net_text.write_text(f'layer {{ name: "source" {data_layer} top: "data" top: "label" '
                        f'include {{ phase: {phase} }} }}' + CONV1)
    model = blobcast.load(WEIGHTS, prototxt=net_text)
    net = Net(model)  # the TEST phase: a TRAIN-only data layer is left out, and still feeds it
    assert list(net.inputs) == ["data"]
    assert net.inputs["data"] == shape
    if shape is None:
        with pytest.raises(blobcast.BlobcastError, match=r"'data' has no known shape, made by the "
                           r"data layer 'source' \(\w+\) \(known so far: \[(3|\?), 3, \?, \?\]\); "
                           r"give one with --input data=SHAPE"):
            blob_shapes(model)
        shape = [1, 3, 8, 8]
    out = net.forward({"data": np.zeros(shape, np.float32)})
    assert out["conv1"].shape == (shape[0], 32, shape[2], shape[3])


def test_a_2014_solver_state_with_legacy_history_goes_to_onnx_and_reads_back(tmp_path):
    # its history blobs are 4-D (1 x 1 x 1 x 64 for a [64] bias), as Caffe wrote every blob then
    state = SNAPSHOT / "cifar10_full_iter_10000.solverstate"
    out = tmp_path / "c.onnx"
    result = runner.invoke(app, ["convert", str(state), str(out), "--solver",
                                 str(SNAPSHOT / "cifar10_full_solver.prototxt"), "--input",
                                 "data=1,3,32,32", "--json"])
    assert result.exit_code == 0, result.output
    assert "training state read back bit-exact" in json.loads(result.stdout)["check"]


def test_segnets_dense_image_data_layer_feeds_the_net_its_input(tmp_path):
    net = ROOT / "fixtures" / "real" / "segnet" / "segnet_basic_inference.prototxt"
    asked = runner.invoke(app, ["run", str(net), "--random-weights"])
    assert asked.exit_code == 2 and "'data' (DenseImageData)" in asked.stderr
    # 40 rows pool to 5 and 3: the fork's pad_out_h on the first Upsample gives 5 back
    result = runner.invoke(app, ["run", str(net), "--random-weights", "--input", "data=1,3,40,48"])
    assert result.exit_code == 0, result.output
    assert "prob [1, 11, 40, 48]" in result.stdout
