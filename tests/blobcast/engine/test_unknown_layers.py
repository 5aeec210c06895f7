"""A layer type blobcast cannot run stops nothing around it: run and verify
compute every output they can and name the ones they cannot; a plugin file
named with --layer-plugin supplies the missing implementation."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import blobcast
from blobcast.cli import app
from blobcast.converters.prototxt import net_from_text

runner = CliRunner()

NET = '''layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "mystery" type: "FancyFork" bottom: "conv" top: "fancy" }
layer { name: "relu" type: "ReLU" bottom: "fancy" top: "relu" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
'''
PLUGIN = '''from blobcast.layers import LayerOp, register


@register("FancyFork")
class FancyFork(LayerOp):
    def forward(self, x):
        return (self.xp.tanh(x) * x.dtype.type(2),)
'''


@pytest.fixture(autouse=True)
def _forget_plugins():
    """A plugin registers its types for the whole process: undo that after each test."""
    from blobcast.engine import plugins
    from blobcast.layers import LAYER_TYPES, SPECS

    before = set(SPECS)
    yield
    for name in set(SPECS) - before:
        SPECS.pop(name)
        LAYER_TYPES.pop(name, None)
    plugins._LOADED.clear()


def test_run_computes_what_it_can_and_names_the_rest(tmp_path):
    (tmp_path / "net.prototxt").write_text(NET)
    result = runner.invoke(app, ["run", str(tmp_path / "net.prototxt"), "--random-weights", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [blob["blob"] for blob in report["blobs"]] == ["pool"]
    assert any("output 'relu' not computed: it needs layer 'mystery' (FancyFork)" in note
               for note in report["notes"])


def test_verify_compares_the_outputs_both_sides_compute(tmp_path):
    model = net_from_text(NET, "<net>")
    rng = np.random.RandomState(0)
    model["conv"].blobs = [blobcast.Blob(rng.normal(size=(4, 3, 3, 3)).astype(np.float32)),
                           blobcast.Blob(rng.normal(size=(4,)).astype(np.float32))]
    blobcast.save(model, tmp_path / "net.caffemodel")
    saved = runner.invoke(app, ["run", str(tmp_path / "net.caffemodel"), "--save", str(tmp_path / "blobs.npz")])
    assert saved.exit_code == 0, saved.output
    result = runner.invoke(app, ["verify", str(tmp_path / "net.caffemodel"), str(tmp_path / "blobs.npz"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [blob["name"] for blob in report["compared"]] == ["pool"]
    assert any("output 'relu' not computed" in note for note in report["notes"])
    blobs = dict(np.load(tmp_path / "blobs.npz"))
    blobs["pool"] = blobs["pool"] + 1
    np.savez(tmp_path / "wrong.npz", **blobs)
    wrong = runner.invoke(app, ["verify", str(tmp_path / "net.caffemodel"), str(tmp_path / "wrong.npz")])
    assert wrong.exit_code == 1


def test_nothing_computable_is_one_clear_error(tmp_path):
    text = NET.replace('bottom: "conv" top: "pool"', 'bottom: "fancy" top: "pool"')
    (tmp_path / "net.prototxt").write_text(text)
    result = runner.invoke(app, ["run", str(tmp_path / "net.prototxt"), "--random-weights"])
    assert result.exit_code == 2
    assert "no output can be computed: each needs a layer the engine cannot run: 'mystery' (FancyFork)" \
        in result.output and "Traceback" not in result.output


def test_a_layer_plugin_runs_the_missing_type(tmp_path):
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "fancy.py").write_text(PLUGIN)
    result = runner.invoke(app, ["run", str(tmp_path / "net.prototxt"), "--random-weights", "--all-blobs",
                                 "--layer-plugin", str(tmp_path / "fancy.py"), "--save",
                                 str(tmp_path / "blobs.npz")])
    assert result.exit_code == 0, result.output
    blobs = np.load(tmp_path / "blobs.npz")
    np.testing.assert_allclose(blobs["fancy"], np.tanh(blobs["conv"]) * 2, rtol=1e-6)
    np.testing.assert_array_equal(blobs["relu"], np.maximum(blobs["fancy"], 0))


def test_a_broken_or_empty_plugin_is_named(tmp_path):
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "empty.py").write_text("x = 1\n")
    (tmp_path / "broken.py").write_text("raise RuntimeError('no luck')\n")
    for plugin, message in (("empty.py", "registers no layer type"),
                            ("broken.py", "failed to load: RuntimeError: no luck"),
                            ("absent.py", "no such layer plugin file")):
        result = runner.invoke(app, ["run", str(tmp_path / "net.prototxt"), "--random-weights",
                                     "--layer-plugin", str(tmp_path / plugin)])
        assert result.exit_code == 2 and message in result.output and plugin in result.output


def _weighted_net(tmp_path):
    model = net_from_text(NET, "<net>")
    rng = np.random.RandomState(0)
    model["conv"].blobs = [blobcast.Blob(rng.normal(size=(4, 3, 3, 3)).astype(np.float32)),
                           blobcast.Blob(rng.normal(size=(4,)).astype(np.float32))]
    blobcast.save(model, tmp_path / "net.caffemodel")
    return tmp_path / "net.caffemodel"


def test_onnx_export_asks_for_the_shapes_it_cannot_know(tmp_path):
    weights = _weighted_net(tmp_path)
    result = runner.invoke(app, ["convert", str(weights), str(tmp_path / "net.onnx")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "the shapes of the outputs 'relu' are unknown" in result.output
    assert "give the shapes of 'fancy' with --shape" in result.output
    assert not (tmp_path / "net.onnx").exists()
    known = runner.invoke(app, ["convert", str(weights), str(tmp_path / "net.onnx"), "--shape", "pool=1,4,3,3"])
    assert known.exit_code == 2 and "'pool' is not one" in known.output


def test_onnx_export_of_an_unknown_layer_checks_what_onnxruntime_runs(tmp_path):
    import onnx

    weights = _weighted_net(tmp_path)
    result = runner.invoke(app, ["convert", str(weights), str(tmp_path / "net.onnx"),
                                 "--shape", "fancy=1,4,6,6", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["check"] == "onnx checker (full)"
    assert report["forward"]["outputs"] == 1 and report["forward"]["not_compared"] == ["relu"]
    assert any("not compared: 'relu' (needs 'mystery' (FancyFork))" in note for note in report["notes"])
    graph = onnx.load(tmp_path / "net.onnx").graph
    assert [(n.name, n.domain) for n in graph.node if n.op_type == "FancyFork"] == [("mystery", "ai.blobcast")]
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.output}
    assert shapes == {"relu": [1, 4, 6, 6], "pool": [1, 4, 3, 3]}
    verified = runner.invoke(app, ["verify", str(weights), str(tmp_path / "net.onnx"), "--json"])
    assert verified.exit_code == 0, verified.output
    compared = json.loads(verified.stdout)
    assert [blob["name"] for blob in compared["compared"]] == ["pool"]
    assert any("B: output 'relu' not computed: it needs node 'mystery' (FancyFork)" in note
               for note in compared["notes"])
    every = runner.invoke(app, ["verify", str(weights), str(tmp_path / "net.onnx"), "--all-blobs", "--json"])
    assert every.exit_code == 0, every.output
    assert {blob["name"] for blob in json.loads(every.stdout)["compared"]} == {"conv", "pool"}
    # what onnxruntime does run is really compared: a changed weight fails
    model = onnx.load(tmp_path / "net.onnx")
    conv_weight = next(t for t in model.graph.initializer if t.name == "conv/param0")
    values = onnx.numpy_helper.to_array(conv_weight).copy()
    values[0, 0, 0, 0] += 1
    conv_weight.CopyFrom(onnx.numpy_helper.from_array(values, conv_weight.name))
    onnx.save(model, tmp_path / "changed.onnx")
    changed = runner.invoke(app, ["verify", str(weights), str(tmp_path / "changed.onnx")])
    assert changed.exit_code == 1


def test_a_plugin_gives_the_shapes_and_the_layer_comes_back(tmp_path):
    import onnx

    weights = _weighted_net(tmp_path)
    (tmp_path / "fancy.py").write_text(PLUGIN)
    result = runner.invoke(app, ["convert", str(weights), str(tmp_path / "net.onnx"),
                                 "--layer-plugin", str(tmp_path / "fancy.py")])
    assert result.exit_code == 0, result.output
    outputs = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
               for v in onnx.load(tmp_path / "net.onnx").graph.output}
    assert outputs["relu"] == [1, 4, 6, 6]
    back = runner.invoke(app, ["convert", str(tmp_path / "net.onnx"), str(tmp_path / "back.caffemodel")])
    assert back.exit_code == 0, back.output
    assert blobcast.load(tmp_path / "back.caffemodel")["mystery"].type == "FancyFork"
    both = runner.invoke(app, ["verify", str(weights), str(tmp_path / "back.caffemodel"), "--json",
                               "--layer-plugin", str(tmp_path / "fancy.py")])
    assert both.exit_code == 0, both.output
    assert {blob["name"] for blob in json.loads(both.stdout)["compared"]} == {"relu", "pool"}


def test_an_onnx_file_whose_outputs_all_need_custom_nodes_is_one_clear_error(tmp_path):
    text = NET.replace('bottom: "conv" top: "pool"', 'bottom: "fancy" top: "pool"')
    model = net_from_text(text, "<net>")
    model["conv"].blobs = [blobcast.Blob(np.ones((4, 3, 3, 3), np.float32)),
                           blobcast.Blob(np.zeros(4, np.float32))]
    with pytest.warns(blobcast.BlobcastWarning, match="mystery"):
        blobcast.save(model, tmp_path / "net.onnx", given_shapes={"fancy": [1, 4, 6, 6]})
    result = runner.invoke(app, ["run", str(tmp_path / "net.onnx")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "no output can be computed: each needs a node onnxruntime cannot run: 'mystery' (FancyFork)" \
        in result.output
