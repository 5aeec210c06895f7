"""Net definitions, and weights matched onto them by layer name."""

import numpy as np
import pytest

import blobcast
from blobcast.converters import caffe_pb2 as pb

from ..conftest import CAFFE, GENERATED


def test_deploy_prototxt_with_training_snapshot_matches_by_name():
    model = blobcast.load(CAFFE / "lenet" / "snapshots" / "sgd_bp_iter_5.caffemodel",
                          prototxt=CAFFE / "lenet" / "lenet_deploy.prototxt")
    assert [layer.type for layer in model][0] == "Input"
    assert model["ip2"].blobs[0].shape == (10, 16)
    assert any("not in the architecture were ignored" in n for n in model.notes) is False
    trained = blobcast.load(CAFFE / "lenet" / "snapshots" / "sgd_bp_iter_5.caffemodel")
    np.testing.assert_array_equal(model["ip2"].blobs[0].data.numpy(),
                                  trained["ip2"].blobs[0].data.numpy())


def test_unmatched_layers_are_listed(tmp_path):
    text = (CAFFE / "lenet" / "lenet_deploy.prototxt").read_text().replace('"ip2"', '"fc_new"')
    deploy = tmp_path / "renamed.prototxt"
    deploy.write_text(text)
    model = blobcast.load(CAFFE / "lenet" / "snapshots" / "sgd_bp_iter_5.caffemodel", prototxt=deploy)
    notes = " ".join(model.notes)
    assert "ignored: ip2" in notes
    assert "got no weights: fc_new" in notes


def test_shape_mismatch_names_the_layer(tmp_path):
    text = (CAFFE / "lenet" / "lenet_deploy.prototxt").read_text()
    deploy = tmp_path / "wider.prototxt"
    deploy.write_text(text.replace("num_output: 16", "num_output: 32"))
    with pytest.raises(blobcast.FormatError, match="layer 'ip1' blob 0: num_output is 32 but the "
                                                   r"weights have shape \[16, 100\]"):
        blobcast.load(CAFFE / "lenet" / "snapshots" / "sgd_bp_iter_5.caffemodel", prototxt=deploy)


def test_blob_count_mismatch_names_the_layer(tmp_path):
    text = (CAFFE / "lenet" / "lenet_deploy.prototxt").read_text()
    deploy = tmp_path / "nobias.prototxt"
    deploy.write_text(text.replace("num_output: 16", "num_output: 16 bias_term: false"))
    with pytest.raises(blobcast.FormatError, match="layer 'ip1' .* takes 1 blobs but the weights have 2"):
        blobcast.load(CAFFE / "lenet" / "snapshots" / "sgd_bp_iter_5.caffemodel", prototxt=deploy)


def test_syntax_error_gives_line_and_column(tmp_path):
    bad = tmp_path / "bad.prototxt"
    # An unknown field before the error is cut out of the text, not moved:
    # the position is still the file's.
    bad.write_text('name: "x"\nlayer {\n  name: "a" typo { a: 1 }\n  type: 3\n}\n')
    with pytest.raises(blobcast.FormatError) as caught:
        blobcast.load(bad)
    message = str(caught.value)
    assert "bad.prototxt" in message and "line 4, column 9" in message and "string" in message
    assert "\n" not in message


def test_prototxt_round_trip_keeps_every_setting(tmp_path):
    zoo = blobcast.load(CAFFE / "zoo" / "zoo_deploy.prototxt")
    out = tmp_path / "zoo.prototxt"
    blobcast.save(zoo, out)
    again = blobcast.load(out)
    assert [layer.spec.to_dict() for layer in zoo] == [layer.spec.to_dict() for layer in again]


def test_prototxt_text_matches_protobuf_text_format(tmp_path):
    out = tmp_path / "lenet.prototxt"
    blobcast.save(blobcast.load(CAFFE / "lenet" / "lenet_train.prototxt"), out)
    from google.protobuf import text_format

    expected = pb.NetParameter()
    text_format.Parse((CAFFE / "lenet" / "lenet_train.prototxt").read_text(), expected)
    parsed = pb.NetParameter()
    text_format.Parse(out.read_text(), parsed)
    assert parsed == expected


def test_legacy_prototxt_v1_generated_fixture_upgrades():
    model = blobcast.load(GENERATED / "lenet_v1.prototxt")
    assert model.source_version == "V1"
    assert [layer.type for layer in model] == ["Input", "Convolution", "Pooling", "InnerProduct",
                                               "ReLU", "InnerProduct", "Softmax"]
    assert model["conv1"].param_specs[1].lr_mult == 2.0
    assert model.inputs() == {"data": [1, 1, 12, 12]}
