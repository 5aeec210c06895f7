"""Data layers become net inputs in the phase that runs, also when they
belong to another phase: `caffe train` snapshots hold the TRAIN net, whose
only data layer is TRAIN-only (fixtures/real/cifar10-full-snapshot, a real
2014 snapshot of BVLC's CIFAR-10 example)."""

import json

import numpy as np
import onnx
from typer.testing import CliRunner

from blobcast.cli import app

from ..conftest import ROOT

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


def test_a_2014_solver_state_with_legacy_history_goes_to_onnx_and_reads_back(tmp_path):
    # its history blobs are 4-D (1 x 1 x 1 x 64 for a [64] bias), as Caffe wrote every blob then
    state = SNAPSHOT / "cifar10_full_iter_10000.solverstate"
    out = tmp_path / "c.onnx"
    result = runner.invoke(app, ["convert", str(state), str(out), "--solver",
                                 str(SNAPSHOT / "cifar10_full_solver.prototxt"), "--input",
                                 "data=1,3,32,32", "--json"])
    assert result.exit_code == 0, result.output
    assert "training state read back bit-exact" in json.loads(result.stdout)["check"]
