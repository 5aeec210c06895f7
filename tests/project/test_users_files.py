"""Real users' files: training snapshots, train_test nets, definitions without
weights, weights without definitions, old solver states, other tools' .npz."""

import json
import shutil

import cv2
import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

import blobcast
from blobcast.cli import app
from blobcast.fillers import fill
from blobcast.params import Message

from ..conftest import CAFFE

runner = CliRunner()
LENET = CAFFE / "lenet"
SNAPSHOT = LENET / "snapshots" / "sgd_bp_iter_5.caffemodel"  # written by `caffe train`
GOLDEN = np.load(LENET / "lenet_forward.npz")


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _train_test(tmp_path, crop: bool = True):
    """Caffe's examples' layout: two Data layers named alike, one per phase,
    an Accuracy for TEST, the loss for both; the layers of the snapshot."""
    train = (LENET / "lenet_train.prototxt").read_text()
    body = train[train.index('layer {\n  name: "conv1"'):]
    crop_setting = " crop_size: 12" if crop else ""
    data = "".join(
        f'layer {{\n  name: "mnist"\n  type: "Data"\n  top: "data"\n  top: "label"\n'
        f'  include {{ phase: {phase} }}\n  transform_param {{ scale: 0.00390625{crop_setting} }}\n'
        f'  data_param {{ source: "mnist_{phase.lower()}_lmdb" batch_size: {batch} backend: LMDB }}\n}}\n'
        for phase, batch in (("TRAIN", 64), ("TEST", 100)))
    accuracy = ('layer {\n  name: "accuracy"\n  type: "Accuracy"\n  bottom: "ip2"\n  bottom: "label"\n'
                '  top: "accuracy"\n  include { phase: TEST }\n}\n')
    text = 'name: "TinyLeNet"\n' + data + body.replace('layer {\n  name: "loss"',
                                                       accuracy + 'layer {\n  name: "loss"')
    path = tmp_path / ("lenet_train_test.prototxt" if crop else "lenet_train_test_nocrop.prototxt")
    path.write_text(text)
    return path


def _golden_input(tmp_path, batch: int = 1):
    x = np.repeat(GOLDEN["input"], batch, axis=0)
    np.save(tmp_path / "x.npy", x)
    return tmp_path / "x.npy"


def test_a_training_snapshot_converts_and_runs_without_a_deploy_net(tmp_path):
    onnx_path = tmp_path / "snapshot.onnx"
    converted = run("convert", SNAPSHOT, onnx_path, "--json")
    assert converted.exit_code == 0, converted.output
    assert json.loads(converted.stdout)["forward"]["passed"]
    graph = onnx.load(onnx_path).graph
    assert [i.name for i in graph.input] == ["data"] and [o.name for o in graph.output] == ["ip2"]
    # The deploy net Caffe's TEST phase sees computes what Caffe computed.
    ran = run("run", SNAPSHOT, "--input", f"data={_golden_input(tmp_path)}", "--json")
    facts = json.loads(ran.stdout)
    assert facts["blobs"][0]["blob"] == "ip2"
    np.testing.assert_allclose(facts["blobs"][0]["first"],
                               GOLDEN["sgd_bp_iter_5_caffemodel__ip2"].ravel()[:4], atol=1e-5)
    assert run("verify", SNAPSHOT, onnx_path).exit_code == 0
    shown = run("inspect", SNAPSHOT)
    assert "runs: the TEST phase, 5 layers: data [8, 1, 12, 12] -> ip2" in shown.stdout
    assert "not run: data (DummyData), loss (SoftmaxWithLoss)" in shown.stdout


def test_a_train_test_net_pairs_with_its_weights(tmp_path):
    net = _train_test(tmp_path)
    ran = run("run", SNAPSHOT, "--prototxt", net, "--json")
    assert ran.exit_code == 0, ran.output
    assert json.loads(ran.stdout)["inputs"] == {"data": [100, 1, 12, 12]}  # TEST batch, crop, conv1
    for destination in ("tt.onnx", "tt.caffemodel", "tt.caffemodel.h5"):
        done = run("convert", SNAPSHOT, tmp_path / destination, "--prototxt", net)
        assert done.exit_code == 0, (destination, done.output)
    again = blobcast.load(tmp_path / "tt.caffemodel.h5")
    assert [layer.name for layer in again.layers][:2] == ["mnist", "mnist"]
    shown = run("inspect", net)
    assert "(include phase TRAIN)" in shown.stdout and "(include phase TEST)" in shown.stdout
    # Within one phase a duplicate name is still an error, as in Caffe.
    twice = net.read_text().replace("include { phase: TRAIN }", "include { phase: TEST }")
    (tmp_path / "twice.prototxt").write_text(twice)
    refused = run("run", SNAPSHOT, "--prototxt", tmp_path / "twice.prototxt")
    assert refused.exit_code == 2 and "duplicate layer names (mnist)" in refused.stderr


def test_an_input_the_net_cannot_size_is_named_with_the_option_to_give(tmp_path):
    net = _train_test(tmp_path, crop=False)  # the image size is in the database
    failed = run("run", SNAPSHOT, "--prototxt", net)
    assert failed.exit_code == 2
    assert ("the net input 'data' has no known shape, made by the data layer 'mnist' (Data) (known so "
            "far: [100, 1, ?, ?]); give one with --input data=SHAPE") in failed.stderr
    exported = run("convert", SNAPSHOT, tmp_path / "x.onnx", "--prototxt", net)
    assert exported.exit_code == 2 and "--input data=SHAPE" in exported.stderr
    given = run("convert", SNAPSHOT, tmp_path / "x.onnx", "--prototxt", net, "--input", "data=1,1,12,12",
                "--json")
    assert given.exit_code == 0, given.output
    assert json.loads(given.stdout)["forward"]["passed"]
    # --input also sizes the forward check of a Caffe-to-Caffe conversion.
    checked = run("convert", SNAPSHOT, tmp_path / "x.caffemodel.h5", "--prototxt", net, "--input",
                  "data=2,1,12,12", "--json")
    assert json.loads(checked.stdout)["forward"]["outputs"] == 1


def test_random_weights_follow_the_fillers_and_the_seed(tmp_path):
    deploy = LENET / "lenet_deploy.prototxt"
    first = json.loads(run("run", deploy, "--random-weights", "--json").stdout)["blobs"][0]
    same = json.loads(run("run", deploy, "--random-weights", "--json").stdout)["blobs"][0]
    other = json.loads(run("run", deploy, "--random-weights", "--seed", "5", "--json").stdout)["blobs"][0]
    assert first == same and first["first"] != other["first"]
    assert first["shape"] == [1, 10] and abs(sum(first["first"])) > 0
    rng = np.random.RandomState(0)
    filler = Message("FillerParameter")
    filler.type = "bilinear"
    kernel = fill(filler, (1, 1, 4, 4), rng)[0, 0]
    np.testing.assert_allclose(kernel[0], [0.0625, 0.1875, 0.1875, 0.0625])  # Caffe's 2x upsampling
    filler.type = "xavier"
    values = fill(filler, (64, 32, 3, 3), rng)
    assert np.abs(values).max() <= np.sqrt(3 / (32 * 9)) and values.std() > 0.05
    filler.type = "constant"
    filler.value = 0.5
    assert (fill(filler, (3,), rng) == 0.5).all()


def test_caffes_own_hdf5_weights_become_a_weights_only_caffemodel(tmp_path):
    source = LENET / "snapshots" / "sgd_h5_iter_5.caffemodel.h5"  # Caffe wrote it: no architecture
    shown = run("inspect", source)
    assert "no architecture" in shown.stdout and "pair it with --prototxt" in shown.stdout
    weights = tmp_path / "w.caffemodel"
    done = run("convert", source, weights)
    assert done.exit_code == 0 and "carries no layer definitions" in done.stderr
    net = cv2.dnn.readNetFromCaffe(str(LENET / "lenet_deploy.prototxt"), str(weights))
    net.setInput(GOLDEN["input"])
    np.testing.assert_allclose(net.forward("prob"), GOLDEN["sgd_h5_iter_5_caffemodel_h5__prob"],
                               atol=1e-6)
    assert [layer.name for layer in blobcast.load(weights).layers] == \
        [layer.name for layer in blobcast.load(source).layers]  # the file's order kept


def test_caffes_nested_slash_hdf5_becomes_a_caffemodel_opencv_loads(tmp_path):
    slash = CAFFE / "slash"
    weights = tmp_path / "nested.caffemodel"
    source = slash / "snapshots" / "slash_nested_h5_iter_2.caffemodel.h5"
    assert run("convert", source, weights).exit_code == 0
    golden = np.load(slash / "slash_nested_bp_forward.npz")
    net = cv2.dnn.readNetFromCaffe(str(slash / "slash_nested_deploy.prototxt"), str(weights))
    net.setInput(golden["data"])
    last = [name for name in golden.files if name != "data"][-1]
    np.testing.assert_allclose(net.forward(last), golden[last], atol=1e-5)


def test_a_pre_2015_state_names_weights_without_a_suffix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(SNAPSHOT, "lenet_iter_5")
    state = blobcast.load(LENET / "snapshots" / "sgd_bp_iter_5.solverstate")
    state.learned_net = "lenet_iter_5"
    blobcast.save(state, "lenet_iter_5.solverstate")
    shown = json.loads(run("inspect", "lenet_iter_5.solverstate", "--json").stdout)
    assert shown["learned_net_found"] == "lenet_iter_5" and shown["history"][0]["layer"] == "conv1"
    done = run("convert", "lenet_iter_5.solverstate", "new.solverstate.h5", "--weights", "new.caffemodel.h5")
    assert done.exit_code == 0, done.output
    assert blobcast.load("new.solverstate.h5").learned_net == "new.caffemodel.h5"


def test_verify_against_another_tools_npz_uses_its_inputs(tmp_path):
    deploy = LENET / "lenet_deploy.prototxt"
    x = np.random.RandomState(3).normal(0, 1, (1, 1, 12, 12)).astype(np.float32)
    net = cv2.dnn.readNetFromCaffe(str(deploy), str(SNAPSHOT))
    net.setInput(x)
    np.savez(tmp_path / "opencv.npz", data=x, prob=net.forward("prob"))  # keyed by blob name
    result = run("verify", SNAPSHOT, tmp_path / "opencv.npz", "--prototxt", deploy, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["input_sources"] == {"data": "opencv.npz"} and report["passed"]
    shifted = run("verify", SNAPSHOT, tmp_path / "opencv.npz", "--prototxt", deploy, "--input",
                  "data=1,1,12,12", "--json")
    assert json.loads(shifted.stdout)["input_sources"] == {"data": "--input"}
    assert shifted.exit_code == 1  # random inputs do not give OpenCV's outputs


def test_a_failed_forward_check_explains_itself(tmp_path):
    result = run("convert", SNAPSHOT, tmp_path / "x.onnx", "--atol", "0", "--rtol", "0", "--json")
    report = json.loads(result.stdout)
    if result.exit_code == 0:  # the two engines agreed bit for bit on this machine
        assert report["forward"]["max_abs_error"] == 0.0
        pytest.skip("no float32 difference to explain")
    assert result.exit_code == 1 and report["ok"] is False
    assert "beyond atol 0 + rtol 0" in report["error"] and "float32 and float64" in report["error"]
    assert "--no-verify" in report["error"]
    assert not (tmp_path / "x.onnx").exists()


def test_convert_says_which_device_ran_its_check(tmp_path):
    report = json.loads(run("convert", SNAPSHOT, tmp_path / "x.caffemodel.h5", "--device", "cpu",
                            "--json").stdout)
    assert report["forward"]["device"] == "cpu"


@pytest.mark.parametrize("content,expected", [
    (b"<!DOCTYPE html>\n<html><head><title>model.caffemodel</title></head>", "this is an HTML page"),
    (b"\n  <html lang=en><body>Not Found</body></html>", "this is an HTML page"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\nsize 5000\n", "Git LFS pointer"),
])
@pytest.mark.parametrize("suffix", [".caffemodel", ".prototxt", ".onnx", ".caffemodel.h5"])
def test_broken_downloads_are_named(tmp_path, content, expected, suffix):
    path = tmp_path / ("download" + suffix)
    path.write_bytes(content)
    result = run("inspect", path)
    assert result.exit_code == 2 and expected in result.stderr


def test_a_v1_net_with_input_names_but_no_dims_takes_the_shape_given(tmp_path):
    text = "\n".join(line for line in (CAFFE / "v1" / "lenet_v1.prototxt").read_text().splitlines()
                     if not line.startswith("input_dim"))
    net = tmp_path / "v1.prototxt"
    net.write_text(text)
    weights = CAFFE / "v1" / "lenet_v1.caffemodel"
    failed = run("run", weights, "--prototxt", net)
    assert failed.exit_code == 2 and "give one with --input data=SHAPE" in failed.stderr
    ran = run("run", weights, "--prototxt", net, "--input", "data=1,1,12,12", "--json")
    assert ran.exit_code == 0, ran.output
    assert run("convert", weights, tmp_path / "v1.onnx", "--prototxt", net, "--input",
               "data=1,1,12,12").exit_code == 0
