"""Files known by their bytes: no suffix or one blobcast does not know, a
suffix the content contradicts, and the 2014 snapshot pair that needs both
(weights without a suffix, history in Caffe's legacy 4-D shapes)."""

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

import blobcast
from blobcast.app.inspect import inspect_file
from blobcast.cli import app
from blobcast.converters import caffe_pb2 as pb
from blobcast.errors import FormatError

from ..conftest import CAFFE, ROOT

runner = CliRunner()
LEGACY = ROOT / "fixtures" / "legacy"
SNAPSHOTS = CAFFE / "lenet" / "snapshots"


def test_a_2014_weights_file_named_without_a_suffix_is_read_by_its_bytes(tmp_path):
    weights = tmp_path / "lenet_iter_10000"
    shutil.copy(LEGACY / "lenet_iter_5", weights)
    result = runner.invoke(app, ["inspect", "--json", str(weights)])
    assert result.exit_code == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["format"] == "caffemodel" and facts["caffe_version"] == "V1"
    assert f"{weights}: read as a Caffe binary net (V1), by its content" in result.stderr
    out = tmp_path / "lenet.caffemodel"
    result = runner.invoke(app, ["convert", str(weights), str(out)])
    assert result.exit_code == 0, result.stderr
    assert result.stderr.count("read as a Caffe binary net (V1)") == 1


@pytest.fixture(scope="module")
def one_of_each(tmp_path_factory):
    """A file of each format blobcast reads, named by its format's suffix."""
    folder = tmp_path_factory.mktemp("kinds")
    files = {
        "caffemodel V2": SNAPSHOTS / "sgd_bp_iter_5.caffemodel",
        "caffemodel V1": CAFFE / "v1" / "lenet_v1.caffemodel",
        "caffemodel V0": CAFFE / "v1" / "lenet_v0.caffemodel",
        "solverstate": SNAPSHOTS / "sgd_bp_iter_5.solverstate",
        "solverstate-h5": SNAPSHOTS / "sgd_h5_iter_5.solverstate.h5",
        "caffemodel-h5": SNAPSHOTS / "sgd_h5_iter_5.caffemodel.h5",
        "prototxt": CAFFE / "lenet" / "lenet_deploy.prototxt",
    }
    np.save(folder / "mean.npy", np.arange(12, dtype=np.float32).reshape(1, 3, 2, 2))
    files["npy"] = folder / "mean.npy"
    blobcast.save(blobcast.load(files["npy"]), folder / "mean.binaryproto")
    files["binaryproto"] = folder / "mean.binaryproto"
    blobcast.save(blobcast.load(files["caffemodel V2"]), folder / "lenet.onnx")
    files["onnx"] = folder / "lenet.onnx"
    return files


SAID = {"caffemodel V2": "a Caffe binary net (V2)", "caffemodel V1": "a Caffe binary net (V1)",
        "caffemodel V0": "a Caffe binary net (V0)", "solverstate": "a Caffe solver state",
        "solverstate-h5": "a Caffe HDF5 solver state", "caffemodel-h5": "a Caffe HDF5 snapshot",
        "prototxt": "a text Caffe definition (prototxt)", "npy": "a NumPy array (.npy)",
        "binaryproto": "a Caffe BlobProto (binaryproto)", "onnx": "an ONNX model"}


@pytest.mark.parametrize("suffix", ["", ".bin", ".model", ".weights", ".pb"])
def test_every_format_is_told_by_its_content(one_of_each, tmp_path, suffix):
    for kind, source in one_of_each.items():
        renamed = tmp_path / f"{kind.replace(' ', '_')}{suffix}"
        shutil.copy(source, renamed)
        result = runner.invoke(app, ["inspect", "--json", str(renamed)])
        assert result.exit_code == 0, (kind, result.stderr)
        assert f"read as {SAID[kind]}, by its content" in result.stderr, kind
        facts = json.loads(result.stdout)
        assert facts["format"] == kind.split()[0]
        if kind.startswith("caffemodel "):
            assert facts["caffe_version"] == kind.split()[1]


@pytest.mark.parametrize("kind,name,says", [
    ("onnx", "lenet.caffemodel", "a Caffe binary model (NetParameter protobuf)"),
    ("caffemodel V2", "lenet.onnx", "an ONNX model"),
    ("prototxt", "lenet.caffemodel", "a Caffe binary model (NetParameter protobuf)"),
    ("solverstate", "state.binaryproto", "a Caffe BlobProto (a mean file)"),
    ("npy", "mean.binaryproto", "a Caffe BlobProto (a mean file)"),
    ("solverstate-h5", "state.caffemodel.h5", "a Caffe HDF5 snapshot (Net::ToHDF5 layout)"),
])
def test_a_suffix_the_content_contradicts_is_one_line_naming_both(one_of_each, tmp_path, kind,
                                                                    name, says):
    renamed = tmp_path / name
    shutil.copy(one_of_each[kind], renamed)
    result = runner.invoke(app, ["inspect", str(renamed)])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1
    assert f"the name says {says} but the content is {SAID[kind]}" in lines[0] and name in lines[0]


def test_a_plain_h5_name_is_read_as_its_content_says(one_of_each, tmp_path):
    renamed = tmp_path / "state.h5"
    shutil.copy(one_of_each["solverstate-h5"], renamed)
    with pytest.warns(UserWarning, match="read as a Caffe HDF5 solver state, by its content"):
        state = blobcast.load(renamed)
    assert state.iter == 5


def test_content_that_is_nothing_known_is_refused_in_one_line(tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(256)) * 8)
    result = runner.invoke(app, ["inspect", str(junk)])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1
    assert "neither its name nor its content" in lines[0] and "junk.bin" in lines[0]


def test_legacy_4d_history_is_accepted_as_caffe_accepts_it(tmp_path):
    # Caffe before 2015 wrote a [4] bias's history as 1 x 1 x 1 x 4.
    stored = pb.SolverState.FromString((LEGACY / "lenet_iter_5.solverstate").read_bytes())
    assert (stored.history[1].num, stored.history[1].width, len(stored.history[1].shape.dim)) == (1, 4, 0)
    result = runner.invoke(app, ["inspect", "--json", str(LEGACY / "lenet_iter_5.solverstate")])
    assert result.exit_code == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["params_from"].endswith("lenet_iter_5")
    shapes = [tensor["shape"] for group in facts["history"] for tensor in group["tensors"]]
    assert shapes == [[4, 1, 3, 3], [4], [16, 100], [16], [10, 16], [10]]
    modern = blobcast.load(SNAPSHOTS / "sgd_bp_iter_5.solverstate")
    legacy = blobcast.load(LEGACY / "lenet_iter_5.solverstate")
    for old, new in zip(legacy.history, modern.history):
        assert np.array_equal(old.numpy().ravel(), new.numpy().ravel())


def test_a_history_of_another_size_is_still_refused(tmp_path):
    stored = pb.SolverState.FromString((LEGACY / "lenet_iter_5.solverstate").read_bytes())
    stored.history[1].width = 3
    del stored.history[1].data[-1]
    shutil.copy(LEGACY / "lenet_iter_5", tmp_path / "lenet_iter_5")
    bad = tmp_path / "bad.solverstate"
    bad.write_bytes(stored.SerializeToString())
    with pytest.raises(FormatError, match=r"history tensor 1 has shape \[1, 1, 1, 3\] but its "
                                          r"parameter 'conv1' blob 1 has shape \[4\]"):
        inspect_file(str(bad))
