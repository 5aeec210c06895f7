"""Names from files reach the terminal through one escaping function: no rich
markup, no control or escape characters, no emoji codes expanded."""

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

import blobcast
from blobcast.cli import app
from blobcast.display import safe

from ..conftest import GENERATED

runner = CliRunner()
# A link, a closing tag rich refuses ("[/]"), a window title and an emoji code.
HOSTILE = "[link=https://example.com/x]click[/link][/]\x1b]0;pwned\x07:smile:"


def _plain(output: str) -> None:
    assert "\x1b" not in output and "\x07" not in output and "\N{SMILING FACE WITH OPEN MOUTH}" not in output
    assert safe(HOSTILE).replace("\\[", "[") in output  # shown as written, controls as escapes


def test_inspect_shows_hdf5_compound_field_names_as_written(tmp_path):
    path = tmp_path / "lenet.caffemodel.h5"
    blobcast.save(blobcast.load(GENERATED / "lenet.caffemodel"), path)
    with h5py.File(path, "a") as handle:
        handle.create_dataset("extra", data=np.zeros(2, dtype=[(HOSTILE, "<f4"), ("b", "<i4")]))
    result = runner.invoke(app, ["inspect", str(path)])
    assert result.exit_code == 0, result.output
    _plain(result.stdout)


def _flat_net(prefix: str) -> blobcast.Model:
    model = blobcast.Model()
    model.layers.append(blobcast.Layer("data", "Input", tops=["data"],
                                       input_param={"shape": [{"dim": [1, 4, 8, 8]}]}))
    previous = "data"
    for block in (1, 2, 3):
        name = f"{prefix}blk{block}/conv"
        model.layers.append(blobcast.Layer(name, "Convolution", bottoms=[previous], tops=[name],
                                           convolution_param={"num_output": 4, "kernel_size": [3],
                                                              "pad": [1]}))
        model.layers.append(blobcast.Layer(f"{prefix}blk{block}/relu", "ReLU", bottoms=[name],
                                           tops=[name]))
        previous = name
    return model


@pytest.mark.parametrize("command", ["modularize", "inspect-modules"])
def test_module_names_made_from_layer_names_are_escaped(tmp_path, command):
    flat = tmp_path / "flat.prototxt"
    blobcast.save(_flat_net(HOSTILE), flat)
    arguments = {"modularize": ["modularize", flat, tmp_path / "modular.prototxt"],
                 "inspect-modules": ["inspect", flat, "--modules"]}[command]
    result = runner.invoke(app, [str(a) for a in arguments])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert "\N{SMILING FACE WITH OPEN MOUTH}" not in result.output
    assert "[link=https://example.com/x]click[/link][/]\\x1b]0;pwned\\x07:smile:" in result.stdout


def test_a_blob_name_in_a_verify_failure_is_shown_as_written(tmp_path):
    name = "[bold]prob\\"  # escaped, then quoted, its backslash would re-open the tag
    models = []
    for offset in (0.0, 1.0):
        model = blobcast.load(GENERATED / "lenet.caffemodel")
        model["prob"].spec.top = [name]
        weights = model["ip2"].blobs[0].data.numpy().copy()
        weights[0] += offset  # one class's weights: its probability changes
        model["ip2"].blobs[0] = blobcast.Blob(weights)
        models.append(tmp_path / f"{len(models)}.caffemodel")
        blobcast.save(model, models[-1])
    result = runner.invoke(app, ["verify", *map(str, models)])
    assert result.exit_code == 1, result.output
    assert f"the first in net order is {name!r}" in result.stdout
