"""Whole-net shapes, and the load-time check of each weight blob's shape
against its layer class, on files real Caffe wrote."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

import blobcast
from blobcast.cli import app
from blobcast.model import Blob
from blobcast.schedule import Schedule
from blobcast.shapes import blob_shapes

from ..conftest import CAFFE

ZOO = CAFFE / "zoo"
runner = CliRunner()


def _zoo_with(tmp_path, layer_name: str, index: int, values: np.ndarray):
    """The zoo's weights with one blob replaced, written as a .caffemodel."""
    model = blobcast.load(ZOO / "zoo.caffemodel", prototxt=ZOO / "zoo_deploy.prototxt")
    layer = next(layer for layer in model.layers if layer.name == layer_name)
    layer.blobs[index] = Blob(values)
    path = tmp_path / "changed.caffemodel"
    blobcast.save(model, path)
    return path


def test_a_wrong_scale_blob_is_refused_at_load_naming_the_layer_blob_and_shapes(tmp_path):
    model = blobcast.load(ZOO / "zoo.caffemodel", prototxt=ZOO / "zoo_deploy.prototxt")
    scale = next(layer for layer in model.layers if layer.name == "bn_scale")
    channels = scale.blobs[0].shape[0]
    weights = _zoo_with(tmp_path, "bn_scale", 0, np.ones(channels - 1, np.float32))
    expected = (re.escape(f"layer 'bn_scale' (Scale) blob 0: expected shape [{channels}] (for "
                          f"inputs of shape [[2, {channels}, ") + r"\d+, \d+\]\]\), the file has "
                + re.escape(f"[{channels - 1}]"))
    with pytest.raises(blobcast.FormatError, match=expected):
        blobcast.load(weights, prototxt=ZOO / "zoo_deploy.prototxt")
    result = runner.invoke(app, ["inspect", str(weights), "--prototxt",
                                 str(ZOO / "zoo_deploy.prototxt"), "--json"])
    assert result.exit_code == 2
    line = json.loads(result.stdout)["error"]
    assert "\n" not in line and "blob 0: expected shape" in line and "changed.caffemodel" in line


def test_without_input_shapes_a_scale_s_blobs_must_agree_with_each_other(tmp_path):
    deploy = tmp_path / "unsized.prototxt"
    deploy.write_text((ZOO / "zoo_deploy.prototxt").read_text().replace(
        "input_param { shape { dim: 2 dim: 4 dim: 17 dim: 17 } }", ""))
    blobcast.load(ZOO / "zoo.caffemodel", prototxt=deploy)  # nothing sized: nothing refused
    model = blobcast.load(ZOO / "zoo.caffemodel", prototxt=ZOO / "zoo_deploy.prototxt")
    channels = next(layer for layer in model.layers if layer.name == "bn_scale").blobs[1].shape[0]
    weights = _zoo_with(tmp_path, "bn_scale", 1, np.zeros(channels + 2, np.float32))
    with pytest.raises(blobcast.FormatError, match=rf"layer 'bn_scale' \(Scale\) blob 1: expected "
                       rf"shape \[{channels}\] \(blob 0's\), the file has \[{channels + 2}\]"):
        blobcast.load(weights, prototxt=deploy)


def test_every_real_caffe_pair_in_the_fixtures_loads():
    # Each .caffemodel beside the net definition it was trained or made with.
    pairs = [(ZOO / "zoo.caffemodel", ZOO / "zoo_deploy.prototxt"),
             (CAFFE / "lenet" / "snapshots" / "sgd_bp_iter_5.caffemodel",
              CAFFE / "lenet" / "lenet_deploy.prototxt")]
    pairs += [(weights, weights.with_suffix(".prototxt"))
              for weights in sorted((CAFFE / "forks2").glob("*.caffemodel"))
              if weights.with_suffix(".prototxt").exists()]
    for weights, prototxt in pairs:
        blobcast.load(weights, prototxt=prototxt)


def test_blob_shapes_gives_the_schedule_it_sized():
    model = blobcast.load(ZOO / "zoo.caffemodel", prototxt=ZOO / "zoo_deploy.prototxt")
    schedule, shapes = blob_shapes(model)
    assert isinstance(schedule, Schedule)
    assert shapes["data"] == (2, 4, 17, 17)
    assert all(name in shapes for name in schedule.outputs)


def test_a_wrong_blob_in_a_file_that_stores_its_net_is_shown_by_inspect(tmp_path):
    # The .caffemodel records its net with the weights: inspect shows the file
    # as it is, and says which blob the net cannot run with.
    model = blobcast.load(ZOO / "zoo.caffemodel", prototxt=ZOO / "zoo_deploy.prototxt")
    channels = next(layer for layer in model.layers if layer.name == "bn_scale").blobs[0].shape[0]
    weights = _zoo_with(tmp_path, "bn_scale", 0, np.ones(channels - 1, np.float32))
    result = runner.invoke(app, ["inspect", str(weights), "--json"])
    assert result.exit_code == 0, result.output
    notes = [note for note in json.loads(result.stdout)["notes"] if "bn_scale" in note]
    assert len(notes) == 1 and f"the file has [{channels - 1}]" in notes[0]
    assert notes[0].endswith("the net cannot run with it")
    clean = runner.invoke(app, ["inspect", str(ZOO / "zoo.caffemodel"), "--json"])
    assert not [note for note in json.loads(clean.stdout)["notes"] if "cannot run" in note]
