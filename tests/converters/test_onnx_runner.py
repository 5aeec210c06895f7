"""How onnxruntime is given a model for the checks: the graph alone, each
large value as external data at its own bytes in the model file, so that the
runtime maps it in place; the outputs are those of the file given whole."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto

import blobcast
from blobcast.converters import onnx_runner, onnx_versions
from blobcast.converters.onnx_runner import OnnxRunner
from blobcast.converters.onnx_versions import maps_values_in_place

from ..netgen import with_random_weights
from .test_onnx import RESNET

ort = pytest.importorskip("onnxruntime")


@pytest.fixture
def exported(tmp_path, monkeypatch):
    # The test net's tensors are small: map from 64 bytes so most are given in place.
    monkeypatch.setattr(onnx_runner, "_MAPPED_BYTES", 64)
    model = with_random_weights(RESNET, {"data": (2, 3, 32, 32)}, seed=7)
    inline, external = tmp_path / "inline.onnx", tmp_path / "external.onnx"
    blobcast.save(model, inline)
    blobcast.save(model, external, external_data=True)
    return inline, external


@pytest.mark.parametrize("version,maps", [("1.20.1", False), ("1.21.0", True), ("1.32.0", True),
                                          ("1.22.0.dev20250101", True), ("2.0", True), ("x", False)])
def test_the_runtime_version_decides_how_the_model_is_given(version, maps):
    assert maps_values_in_place(version) is maps


def test_the_graph_points_at_the_files_own_bytes(exported):
    inline, _ = exported
    runner = OnnxRunner(str(inline))
    if not runner.in_place:
        pytest.skip("onnxruntime before 1.21 reads the file itself")
    graph, names = runner._graph_on_file(keep_all=False)
    assert names == runner.outputs
    data = inline.read_bytes()
    pointed = 0
    for tensor in graph.graph.initializer:
        if tensor.data_location != TensorProto.EXTERNAL:
            assert len(tensor.raw_data) < 64 or tensor.data_type != TensorProto.FLOAT
            continue
        where = {entry.key: entry.value for entry in tensor.external_data}
        assert where["location"] == "inline.onnx"
        start, length = int(where["offset"]), int(where["length"])
        expected = onnx.numpy_helper.to_array(
            next(t for t in onnx.load(inline).graph.initializer if t.name == tensor.name))
        assert data[start:start + length] == expected.astype("<f4").tobytes()
        pointed += 1
    assert pointed >= 10 and graph.ByteSize() < len(data) // 3


@pytest.mark.parametrize("keep_all", [False, True])
def test_values_given_in_place_run_as_the_whole_file_does(exported, keep_all, monkeypatch):
    inline, external = exported
    x = np.random.default_rng(2).standard_normal((2, 3, 32, 32)).astype(np.float32)
    in_place = OnnxRunner(str(inline))
    got = in_place.forward({"data": x}, keep_all=keep_all)
    # The same file given to onnxruntime whole (as before 1.21).
    monkeypatch.setattr(onnx_runner, "maps_values_in_place", lambda version: False)
    whole = OnnxRunner(str(inline))
    assert not whole.in_place
    expected = whole.forward({"data": x}, keep_all=keep_all)
    assert got.keys() == expected.keys() and len(got) > (20 if keep_all else 0)
    for name in got:
        assert np.array_equal(got[name], expected[name]), name
    if keep_all and in_place.in_place:  # before, a model with external data could not keep every blob
        with pytest.raises(blobcast.BlobcastError, match="external data"):
            OnnxRunner(str(external)).forward({"data": x}, keep_all=True)
        monkeypatch.setattr(onnx_runner, "maps_values_in_place", maps_values_in_place)
        from_external = OnnxRunner(str(external)).forward({"data": x}, keep_all=True)
        for name in got:
            assert np.array_equal(from_external[name], got[name]), name


@pytest.mark.parametrize("version,newest", [("1.17.3", 20), ("1.18.0", 21), ("1.20.1", 21),
                                            ("1.21.0", 22), ("1.23.2", 23), ("1.24.4", 25),
                                            ("1.32.0", 26), ("1.16.3", None), (None, None)])
def test_each_runtime_release_has_its_newest_opset(version, newest):
    assert onnx_versions.runtime_newest_opset(version) == newest


def test_the_default_opset_is_the_newest_onnx_and_the_runtime_take(monkeypatch):
    monkeypatch.setattr(onnx_versions.onnx.defs, "onnx_opset_version", lambda: 22)
    for runtime, expected in [("1.17.3", 20), ("1.32.0", 22), (None, 22)]:
        monkeypatch.setattr(onnx_versions, "installed_runtime", lambda runtime=runtime: runtime)
        assert onnx_versions.default_opset(26) == expected
    assert onnx_versions.default_opset(19) == 19  # a layer type's own newest


def test_a_model_newer_than_the_runtime_is_refused_with_the_opset_to_use(exported, monkeypatch):
    inline, _ = exported
    stamped = onnx.load(inline).opset_import[0].version
    monkeypatch.setattr(onnx_runner, "runtime_newest_opset", lambda version: stamped - 1)
    with pytest.raises(blobcast.BlobcastError, match=f"runs opsets up to {stamped - 1}, and the model "
                       f"is opset {stamped}: write it with --opset {stamped - 1}"):
        OnnxRunner(str(inline)).forward({"data": np.zeros((2, 3, 32, 32), np.float32)})


def test_the_installed_runtime_is_read_without_importing_it():
    assert onnx_versions.installed_runtime() == ort.__version__


@pytest.mark.parametrize("runtime,numpy_version,loads", [
    ("1.17.3", "2.4.6", False), ("1.17.3", "1.26.4", True), ("1.18.1", "1.26.4", True),
    ("1.19.2", "2.0.0", True), (None, "2.4.6", False)])
def test_a_runtime_built_for_numpy_1_is_not_imported_under_numpy_2(runtime, numpy_version, loads):
    assert onnx_versions.runtime_loads(runtime, numpy_version) is loads
