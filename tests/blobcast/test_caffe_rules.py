"""Nets Caffe's Net::Init and InsertSplits refuse are refused, with Caffe's
reason in one line; what they accept is connected as Caffe connects it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from blobcast.caffe_rules import NetRefused, check_net, shared_memory
from blobcast.cli import app
from blobcast.converters.prototxt import net_from_text
from blobcast.engine import Net

INPUT = ('layer { name: "input" type: "Input" top: "data" '
         'input_param { shape { dim: 1 dim: 2 dim: 3 dim: 3 } } }\n')


def _net(text: str) -> Net:
    return Net(net_from_text(INPUT + text, "<net>"), random_weights=0)


REFUSED = {
    "two_writers": ('layer { name: "a" type: "ReLU" bottom: "data" top: "x" }'
                    'layer { name: "b" type: "Sigmoid" bottom: "data" top: "x" }',
                    "Top blob 'x' produced by multiple sources: layers 'a' and 'b' both write 'x'"),
    "input_written_again": ('layer { name: "again" type: "Input" top: "data" '
                            'input_param { shape { dim: 1 } } }',
                            "Top blob 'data' produced by multiple sources: layers 'input' and "
                            "'again' both write 'data'"),
    "two_tops_one_name": ('layer { name: "s" type: "Slice" bottom: "data" top: "x" top: "x" }',
                          "Top blob 'x' produced by multiple sources: layer 's' names 'x' as two "
                          "of its tops"),
    "in_place_at_another_position": (  # top 0 is bottom 1: not in place for Caffe
        'layer { name: "r" type: "ReLU" bottom: "data" top: "x" }'
        'layer { name: "e" type: "Eltwise" bottom: "data" bottom: "x" top: "x" }',
        "Top blob 'x' produced by multiple sources: layers 'r' and 'e' both write 'x'"),
    "unknown_bottom": ('layer { name: "r" type: "ReLU" bottom: "nowhere" top: "r" }',
                       "Unknown bottom blob 'nowhere' \\(layer 'r', bottom index 0\\): its bottom "
                       "'nowhere' is never produced"),
    "read_before_written": ('layer { name: "early" type: "ReLU" bottom: "late" top: "y" }'
                            'layer { name: "maker" type: "ReLU" bottom: "data" top: "late" }',
                            "Unknown bottom blob 'late' \\(layer 'early', bottom index 0\\)"),
    "in_place_after_a_reader": ('layer { name: "p" type: "Power" bottom: "data" top: "p" }'
                                'layer { name: "relu" type: "ReLU" bottom: "data" top: "data" }',
                                "Top blob 'data' produced by multiple sources: layer 'relu' "
                                "rewrites 'data' in place while layer 'p' reads it too"),
    "in_place_on_a_loss_top": ('layer { name: "p" type: "Power" bottom: "data" top: "p" loss_weight: 1 }'
                               'layer { name: "relu" type: "ReLU" bottom: "p" top: "p" }',
                               "Top blob 'p' produced by multiple sources"),
    "propagate_down_count": ('layer { name: "e" type: "Eltwise" bottom: "data" bottom: "data" top: "e" '
                             'propagate_down: true }',
                             "layer 'e': propagate_down param must be specified either 0 or "
                             "bottom_size times \\(1 vs. 2 bottoms\\)"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_net_caffe_refuses_is_refused_with_caffes_reason(name):
    text, reason = REFUSED[name]
    with pytest.raises(NetRefused, match="^Caffe refuses this net: " + reason) as refused:
        _net(text)
    assert "\n" not in str(refused.value)


def test_an_in_place_layer_after_the_last_reader_is_accepted():
    # The Power reads the ReLU's result: the ReLU is its blob's only reader.
    net = _net('layer { name: "relu" type: "ReLU" bottom: "data" top: "data" }'
               'layer { name: "p" type: "Power" bottom: "data" top: "p" }'
               'layer { name: "q" type: "Power" bottom: "data" top: "q" }')
    names = [layer.name for layer in net.caffe_layers]
    assert names == ["input", "relu", "data_relu_0_split", "p", "q"]
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 3)).astype(np.float32)
    out = net.forward({"data": x})
    assert np.array_equal(out["p"], np.maximum(x, 0)) and np.array_equal(out["q"], out["p"])


def test_a_loss_top_read_again_gets_a_split_whose_first_top_is_the_loss():
    layers = net_from_text(INPUT + 'layer { name: "p" type: "Power" bottom: "data" top: "p" loss_weight: 2 }'
                                   'layer { name: "q" type: "Power" bottom: "p" top: "q" }', "<net>").layers
    split = check_net(layers)[2]
    assert (split.name, split.bottoms) == ("p_p_0_split", ("p",))
    assert split.tops == ("p_p_0_split_0", "p_p_0_split_1")
    assert check_net(layers)[3].bottoms == ("p_p_0_split_1",)


def test_split_flatten_and_reshape_tops_share_their_bottoms_memory():
    layers = net_from_text(INPUT + 'layer { name: "f" type: "Flatten" bottom: "data" top: "f" }'
                                   'layer { name: "r" type: "Reshape" bottom: "f" top: "r" '
                                   'reshape_param { shape { dim: 0 dim: -1 dim: 1 } } }'
                                   'layer { name: "s" type: "Sigmoid" bottom: "data" top: "s" }'
                                   'layer { name: "d" type: "Dropout" bottom: "s" top: "d" }', "<net>").layers
    groups = shared_memory(layers)
    assert groups["r"] == groups["data"] == {"data", "f", "r"}
    assert "s" not in groups and "d" not in groups  # Dropout copies in Caffe


def test_the_command_line_refuses_such_a_net_in_one_line_with_exit_2(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(INPUT + REFUSED["two_writers"][0])
    runner = CliRunner()
    done = runner.invoke(app, ["run", str(path), "--random-weights"])
    assert done.exit_code == 2
    lines = done.output.strip().splitlines()
    assert len(lines) == 1 and "Top blob 'x' produced by multiple sources" in lines[0], done.output
    assert "net.prototxt" in lines[0]
    done = runner.invoke(app, ["run", str(path), "--random-weights", "--json"])
    assert done.exit_code == 2
    report = json.loads(done.stdout)
    assert not report["ok"] and "produced by multiple sources" in report["error"]


def _sharing(first: str, second: str) -> str:
    return ('layer { name: "a" type: "InnerProduct" bottom: "data" top: "a" '
            f'{first} inner_product_param {{ num_output: 2 bias_term: false }} }}'
            'layer { name: "b" type: "InnerProduct" bottom: "data" top: "b" '
            f'{second} inner_product_param {{ num_output: 2 bias_term: false }} }}')


@pytest.mark.parametrize("second,reason", [
    ('param { name: "w" lr_mult: 2 }', "Shared param 'w' has mismatched lr_mult. \\(layers 'a' and 'b'\\)"),
    ('param { name: "w" decay_mult: 0 }', "Shared param 'w' has mismatched decay_mult."),
])
def test_shared_params_with_other_learning_rates_are_refused(second, reason):
    with pytest.raises(NetRefused, match="^Caffe refuses this net: " + reason):
        _net(_sharing('param { name: "w" lr_mult: 1 decay_mult: 1 }', second))


def test_shared_params_of_other_shapes_are_refused_unless_permissive_and_of_one_count():
    import blobcast

    model = net_from_text(INPUT + _sharing('param { name: "w" }', 'param { name: "w" }'), "<net>")
    model["a"].blobs = [blobcast.Blob(np.zeros((2, 18), np.float32))]
    model["b"].blobs = [blobcast.Blob(np.zeros((18, 2), np.float32))]
    with pytest.raises(NetRefused, match="Cannot share param 'w' owned by layer 'a' with layer 'b'; "
                                         "shape mismatch.  Owner layer param shape is 2 18 \\(36\\); "
                                         "sharing layer expects shape 18 2 \\(36\\)"):
        Net(model)
    model["b"].spec.param[0].share_mode = "PERMISSIVE"
    assert Net(model).caffe_layers[-1].name == "b"
    model["b"].blobs = [blobcast.Blob(np.zeros((2, 9), np.float32))]
    with pytest.raises(NetRefused, match="count mismatch.  Owner layer param shape is 2 18 \\(36\\); "
                                         "sharing layer shape is 2 9 \\(18\\)"):
        Net(model)
    # the same settings once: accepted, and a param spec past the layer's blobs is ignored
    _net(_sharing('param { name: "w" lr_mult: 1 }', 'param { name: "w" } param { name: "x" lr_mult: 5 }'))
