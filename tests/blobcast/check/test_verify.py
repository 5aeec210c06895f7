"""verify, run and the engine's net handling."""

import gc
import json
import weakref

import numpy as np
import pytest
from typer.testing import CliRunner

import blobcast
from blobcast.check import compare_arrays
from blobcast.cli import app
from blobcast.engine import Net
from blobcast.model import layer_included

from ...conftest import CAFFE, GENERATED

runner = CliRunner()
LENET = CAFFE / "lenet" / "snapshots"
DEPLOY = CAFFE / "lenet" / "lenet_deploy.prototxt"


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_comparison_measures():
    a = np.array([1.0, 2.0, 0.0, 100.0], np.float32)
    b = np.array([1.0, 2.002, 1e-6, 100.0], np.float32)
    result = compare_arrays("x", a, b, atol=1e-5, rtol=1e-3)
    assert result.passed
    assert result.max_abs_error == pytest.approx(0.002, rel=1e-3)
    assert result.max_rel_error == pytest.approx(1.0)  # 1e-6 against 0: symmetric, bounded by 1
    assert result.min_rtol == pytest.approx((0.002 - 1e-5) / 2.002, rel=1e-3)
    strict = compare_arrays("x", a, b, atol=1e-5, rtol=1e-4)
    assert not strict.passed and strict.mismatched == 1
    nan = compare_arrays("x", np.array([np.nan, 1.0]), np.array([0.0, 1.0]))
    assert not nan.passed and nan.nan_mismatches == 1


def test_verify_passes_across_formats(tmp_path):
    result = run("verify", LENET / "sgd_bp_iter_5.caffemodel", LENET / "sgd_h5_iter_5.caffemodel.h5",
                 "--prototxt", DEPLOY, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["passed"] and report["first_mismatch"] is None
    assert report["compared"][0]["name"] == "prob"
    assert report["inputs"] == {"data": [1, 1, 12, 12]}


def test_verify_fails_and_names_the_first_mismatching_blob(tmp_path):
    model = blobcast.load(GENERATED / "lenet.caffemodel")
    weights = model["ip1"].blobs[0].data.numpy().copy()
    weights[0, 0] += 0.5
    model["ip1"].blobs[0] = blobcast.Blob(weights)
    changed = tmp_path / "changed.caffemodel"
    blobcast.save(model, changed)
    result = run("verify", GENERATED / "lenet.caffemodel", changed, "--all-blobs")
    assert result.exit_code == 1
    assert "first in net order is 'ip1'" in result.stdout
    assert "MISMATCH" in result.stdout and "conv1" in result.stdout


def test_run_save_then_verify_against_the_recording(tmp_path):
    recording = tmp_path / "reference.npz"
    result = run("run", GENERATED / "lenet.caffemodel", "--save", recording, "--seed", "7")
    assert result.exit_code == 0 and recording.exists()
    archive = np.load(recording)
    assert {"prob", "data"} <= set(archive.files)
    h5 = tmp_path / "lenet.caffemodel.h5"
    blobcast.convert(GENERATED / "lenet.caffemodel", h5)
    result = run("verify", h5, recording)  # uses the recorded input, whatever the seed
    assert result.exit_code == 0, result.output
    assert "PASS: 1 blobs" in result.stdout


def test_run_takes_input_files_and_shapes(tmp_path):
    array = np.random.RandomState(3).standard_normal((2, 1, 12, 12)).astype(np.float32)
    np.save(tmp_path / "x.npy", array)
    result = run("run", GENERATED / "lenet.caffemodel", "--input", f"data={tmp_path / 'x.npy'}",
                 "--json")
    facts = json.loads(result.stdout)
    assert facts["inputs"] == {"data": [2, 1, 12, 12]} and facts["blobs"][0]["shape"] == [2, 10]
    bad = run("run", GENERATED / "lenet.caffemodel", "--input", "pixels=1,2")
    assert bad.exit_code == 2 and "no input named pixels" in bad.stderr


def test_convert_reports_the_forward_check(tmp_path):
    result = run("convert", CAFFE / "zoo" / "zoo.caffemodel", tmp_path / "z.caffemodel.h5", "--json")
    report = json.loads(result.stdout)
    assert report["forward"] == {"outputs": 40, "max_abs_error": 0.0, "passed": True, "device": "cpu",
                                 "not_compared": []}
    result = run("convert", CAFFE / "zoo" / "zoo.caffemodel", tmp_path / "y.caffemodel.h5", "--json",
                 "--no-verify")
    assert json.loads(result.stdout)["forward"] is None


PYTHON_LAYER = '''
import pathlib
pathlib.Path(__file__).with_name("imported.marker").write_text("imported")


class Multiply:
    def setup(self, bottom, top):
        self.factor = float(self.param_str)

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data * self.factor
'''


def test_python_layers_run_only_when_allowed(tmp_path):
    (tmp_path / "my_layers.py").write_text(PYTHON_LAYER)
    definition = tmp_path / "net.prototxt"
    definition.write_text('''
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 } } }
layer { name: "triple" type: "Python" bottom: "data" top: "out"
  python_param { module: "my_layers" layer: "Multiply" param_str: "3" } }''')
    refused = run("run", definition, "--python-path", tmp_path)
    assert refused.exit_code == 2 and "--allow-python-layers" in refused.stderr
    assert not (tmp_path / "imported.marker").exists()  # nothing was imported
    inspected = run("inspect", definition)
    assert inspected.exit_code == 0 and "triple Python" in inspected.stdout
    x = np.arange(3, dtype=np.float32).reshape(1, 3)
    np.save(tmp_path / "x.npy", x)
    allowed = run("run", definition, "--allow-python-layers", "--python-path", tmp_path,
                  "--input", f"data={tmp_path / 'x.npy'}", "--save", tmp_path / "out.npz")
    assert allowed.exit_code == 0, allowed.output
    np.testing.assert_array_equal(np.load(tmp_path / "out.npz")["out"], x * 3)


def test_phase_rules_follow_caffe():
    model = blobcast.load(CAFFE / "lenet" / "lenet_train.prototxt")
    layer = model.layers[0]
    layer.spec.include = [{"phase": "TRAIN"}]
    assert layer_included(layer, "TRAIN") and not layer_included(layer, "TEST")
    layer.spec.include = [{"stage": ["deploy"]}]
    assert layer_included(layer, "TEST", stages=["deploy"]) and not layer_included(layer, "TEST")
    layer.spec.include = []
    layer.spec.exclude = [{"min_level": 2}]
    assert layer_included(layer, "TEST", level=1) and not layer_included(layer, "TEST", level=2)


def test_blobs_are_freed_as_the_pass_goes():
    model = blobcast.load(CAFFE / "zoo" / "zoo.caffemodel", prototxt=CAFFE / "zoo" / "zoo_deploy.prototxt")
    produced = {}
    net = Net(model)
    outputs = net.forward({"data": np.load(CAFFE / "zoo" / "zoo_input.npy")},
                          on_blob=lambda name, value: produced.setdefault(name, weakref.ref(value)))
    gc.collect()
    held = set()  # the outputs and every array an output is a view of
    for array in outputs.values():
        while array is not None:
            held.add(id(array))
            array = array.base
    alive = {name for name, ref in produced.items() if ref() is not None}
    assert all(id(produced[name]()) in held for name in alive)
    assert len(produced) - len(alive) >= 25  # the intermediates are gone


def test_missing_bottom_is_a_clear_error():
    model = blobcast.load(GENERATED / "lenet.caffemodel")
    model["ip2"].bottoms[0] = "nowhere"
    with pytest.raises(blobcast.BlobcastError, match="bottom 'nowhere' is never produced"):
        Net(model).forward({"data": np.zeros((1, 1, 12, 12), np.float32)})


def test_nan_and_inf_never_pass_by_accident():
    both_nan = compare_arrays("x", np.array([np.nan, np.nan]), np.array([np.nan, np.nan]))
    assert not both_nan.passed and both_nan.cosine_similarity is None
    assert "NaN/Inf" in both_nan.problem
    allowed = compare_arrays("x", np.array([np.nan, np.inf, 2.0]), np.array([np.nan, np.inf, 2.0]),
                             allow_nonfinite=True)
    assert allowed.passed and allowed.cosine_similarity is None
    signs = compare_arrays("x", np.array([np.inf]), np.array([-np.inf]), allow_nonfinite=True)
    assert not signs.passed and signs.nan_mismatches == 1


def test_verify_with_nothing_in_common_fails(tmp_path):
    np.savez(tmp_path / "other.npz", unrelated=np.zeros(3, np.float32))
    result = run("verify", GENERATED / "lenet.caffemodel", tmp_path / "other.npz", "--all-blobs",
                 "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["passed"] is False and report["compared"] == []
    assert report["problem"].startswith("no blob was compared")
    text = run("verify", GENERATED / "lenet.caffemodel", tmp_path / "other.npz", "--all-blobs")
    assert text.exit_code == 1 and "FAIL: no blob was compared" in text.stdout


def test_verify_of_nan_outputs_needs_the_option(tmp_path):
    model = blobcast.load(GENERATED / "lenet.caffemodel")
    model["ip2"].blobs[1] = blobcast.Blob(np.full(10, np.nan, np.float32))
    path = tmp_path / "nan.caffemodel"
    blobcast.save(model, path)
    assert run("verify", path, path).exit_code == 1
    assert run("verify", path, path, "--allow-nonfinite").exit_code == 0
    converted = run("convert", path, tmp_path / "nan.caffemodel.h5", "--json")
    assert converted.exit_code == 0  # the tensors are bit-exact; the forward check proves nothing
    report = json.loads(converted.stdout)
    assert report["forward"] is None and any("inconclusive" in n for n in report["notes"])


def test_a_net_definition_alone_names_the_layer_without_weights(tmp_path):
    for command in (["run", DEPLOY], ["verify", DEPLOY, DEPLOY], ["convert", DEPLOY, tmp_path / "x.onnx"]):
        result = run(*command)
        assert result.exit_code == 2, (command, result.output)
        assert result.stderr.strip() == (f"blobcast: error: {DEPLOY}: layer 'conv1' (Convolution) has no "
                                         "weights; a net definition alone holds none: give the weights "
                                         "file (a .caffemodel, or weights with --prototxt), or run "
                                         "--random-weights for a shape and speed check")
    assert list(tmp_path.iterdir()) == []


def _zoo():
    return blobcast.load(CAFFE / "zoo" / "zoo.caffemodel", prototxt=CAFFE / "zoo" / "zoo_deploy.prototxt")


def test_final_versions_are_the_blobs_keep_all_returns():
    x = np.load(CAFFE / "zoo" / "zoo_input.npy")
    kept = Net(_zoo()).forward({"data": x}, keep_all=True)
    seen = []
    Net(_zoo()).forward({"data": x}, final_only=True,
                        on_blob=lambda name, value: seen.append((name, np.array(value))))
    names = [name for name, _ in seen]
    assert len(names) == len(set(names))  # each blob once, however often it is rewritten in place
    assert set(names) == set(kept) - {"data"}
    for name, value in seen:
        assert np.array_equal(value, kept[name]), name


def test_all_blobs_compared_as_produced_match_the_blobs_compared_after(tmp_path, monkeypatch):
    import blobcast.check.forward as forward
    import blobcast.check.verify as verify
    from blobcast.engine import Net

    weights = tmp_path / "zoo.caffemodel.h5"
    blobcast.save(_zoo(), weights)
    options = verify.RunOptions(prototxt=str(CAFFE / "zoo" / "zoo_deploy.prototxt"), all_blobs=True)
    streamed = verify.verify_files(str(CAFFE / "zoo" / "zoo.caffemodel"), str(weights), options)
    calls = []
    original = forward._compared_as_produced
    monkeypatch.setattr(forward, "_compared_as_produced", lambda *a: calls.append(1) or original(*a))
    verify.verify_files(str(CAFFE / "zoo" / "zoo.caffemodel"), str(weights), options)
    assert calls == [1]  # an engine net as B is compared as it runs
    monkeypatch.setattr(Net, "streams_blobs", False)  # everything kept, then compared
    kept = verify.verify_files(str(CAFFE / "zoo" / "zoo.caffemodel"), str(weights), options)
    assert len(streamed.compared) == len(kept.compared) > 60
    assert [c.__dict__ for c in streamed.compared] == [c.__dict__ for c in kept.compared]
