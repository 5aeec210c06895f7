"""Replacing an output never deletes or overwrites a file blobcast cannot
prove it wrote itself; no output is ever one of the command's inputs."""

import os
import shutil

import onnx
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

import blobcast
from blobcast.cli import app

from ..conftest import GENERATED

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _onnx_naming(path, locations):
    """A valid-looking ONNX model whose initializers keep their values in
    `locations` (paths relative to the model), each read as 4 floats."""
    tensors = []
    for number, location in enumerate(locations):
        tensor = helper.make_tensor(f"w{number}", TensorProto.FLOAT, [4], [0.0] * 4)
        tensor.ClearField("float_data")
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", "0"), ("length", "16")):
            tensor.external_data.add(key=key, value=value)
        tensors.append(tensor)
    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], tensors)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="blobcast")
    path.write_bytes(model.SerializeToString())


@pytest.mark.parametrize("external", [True, False])
def test_replacing_a_hostile_onnx_model_deletes_none_of_the_files_it_names(tmp_path, external):
    source = tmp_path / "src" / "lenet.caffemodel"
    source.parent.mkdir()
    shutil.copy(GENERATED / "lenet.caffemodel", source)
    (tmp_path / "notes.txt").write_bytes(b"the user's notes, 16+ bytes long")
    (tmp_path / "model.onnx.data").write_bytes(b"not written by blobcast, 16+ bytes")
    (tmp_path / "model.onnx.0badc0de.data").write_bytes(b"nor this one, 16+ bytes....")
    named = ["notes.txt", "src/lenet.caffemodel", "model.onnx.data", "model.onnx.0badc0de.data"]
    _onnx_naming(tmp_path / "model.onnx", named)
    before = {name: (tmp_path / name).read_bytes() for name in named}
    result = run("convert", source, tmp_path / "model.onnx", "--force",
                 "--external-data" if external else "--no-external-data")
    assert result.exit_code == 0, result.output
    assert {name: (tmp_path / name).read_bytes() for name in named} == before
    assert blobcast.load(tmp_path / "model.onnx")["conv1"].blobs[0].shape == (4, 1, 3, 3)


def test_data_a_copy_of_the_replaced_model_still_uses_is_kept(tmp_path):
    source = tmp_path / "lenet.caffemodel"
    shutil.copy(GENERATED / "lenet.caffemodel", source)
    model = tmp_path / "m.onnx"
    blobcast.convert(source, model, onnx_options={"external_data": True})
    shutil.copy(model, tmp_path / "kept.onnx")  # also reads m.onnx.data
    blobcast.convert(source, model, overwrite=True, onnx_options={"external_data": True})
    assert (tmp_path / "m.onnx.data").exists()
    assert blobcast.load(tmp_path / "kept.onnx")["conv1"].blobs[0].shape == (4, 1, 3, 3)


def test_a_data_file_blobcast_wrote_is_marked_as_its_own(tmp_path):
    model = tmp_path / "m.onnx"
    blobcast.convert(GENERATED / "lenet.caffemodel", model, onnx_options={"external_data": True})
    header = (tmp_path / "m.onnx.data").read_bytes()[:64]
    props = {p.key: p.value for p in onnx.load(model, load_external_data=False).metadata_props}
    assert header.startswith(b"blobcast external data\n")
    assert props["blobcast.external_data"].encode() in header


def _lenet_pair(tmp_path):
    weights, net = tmp_path / "lenet.caffemodel", tmp_path / "lenet.prototxt"
    shutil.copy(GENERATED / "lenet.caffemodel", weights)
    shutil.copy(GENERATED / "lenet.prototxt", net)
    return weights, net


def _linked(tmp_path, target, how):
    if how == "same":
        return target
    link = tmp_path / f"{how}-{target.name}"
    (os.symlink if how == "symlink" else os.link)(target, link)
    return link


@pytest.mark.parametrize("how", ["same", "symlink", "hardlink"])
@pytest.mark.parametrize("command", ["convert", "modularize", "draw-prototxt", "draw-against"])
def test_no_command_writes_over_its_own_input(tmp_path, command, how):
    weights, net = _lenet_pair(tmp_path)
    against = tmp_path / "b.caffemodel"
    shutil.copy(weights, against)
    victim = against if command == "draw-against" else net
    out = _linked(tmp_path, victim, how)
    before = {p.name: p.read_bytes() for p in (weights, net, against)}
    arguments = {"convert": ["convert", weights, out, "--prototxt", net, "--force"],
                 "modularize": ["modularize", weights, out, "--prototxt", net, "--force"],
                 "draw-prototxt": ["draw", weights, out, "--prototxt", net, "--force"],
                 "draw-against": ["draw", weights, out, "--prototxt", net, "--against", against,
                                  "--force"]}[command]
    result = run(*arguments)
    assert result.exit_code == 2, result.output
    assert "the output is the input file" in result.stderr and len(result.stderr.splitlines()) == 1
    assert {p.name: p.read_bytes() for p in (weights, net, against)} == before


def test_draw_replaces_an_existing_drawing_only_with_force(tmp_path):
    weights, net = _lenet_pair(tmp_path)
    drawing = tmp_path / "net.dot"
    drawing.write_text("the user's drawing")
    result = run("draw", weights, drawing, "--prototxt", net)
    assert result.exit_code == 2 and "already exists; use --force" in result.stderr
    assert drawing.read_text() == "the user's drawing"
    result = run("draw", weights, drawing, "--prototxt", net, "--force")
    assert result.exit_code == 0, result.output
    assert drawing.read_text().startswith("digraph")


@pytest.mark.parametrize("command", ["convert", "run"])
def test_no_command_writes_over_a_layer_plugin_it_loads(tmp_path, command):
    plugin = tmp_path / "plugin.py"
    plugin.write_text("# registers nothing\n")
    model = GENERATED / "lenet.caffemodel"
    arguments = (["convert", model, plugin, "--to", "prototxt"] if command == "convert"
                 else ["run", model, "--save", plugin])
    result = run(*arguments, "--layer-plugin", plugin, "--force")
    assert result.exit_code == 2 and "the output is the input file" in result.stderr, result.output
    assert plugin.read_text() == "# registers nothing\n"


def test_force_replaces_files_not_pipes(tmp_path):
    pipe = tmp_path / "out.caffemodel.h5"
    os.mkfifo(pipe)
    result = run("convert", GENERATED / "lenet.caffemodel", pipe, "--force")
    assert result.exit_code == 2 and "is a named pipe (FIFO), not a regular file" in result.stderr
    assert pipe.is_fifo() and sorted(p.name for p in tmp_path.iterdir()) == ["out.caffemodel.h5"]
