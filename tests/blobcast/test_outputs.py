"""Outputs stay atomic and honest; names from files cannot drive the terminal."""

import json
import os
import shutil
import threading

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

import blobcast
from blobcast.app import convert as convert_use_case
from blobcast.cli import app
from blobcast.fileio import atomic_destination

from ..conftest import CAFFE, GENERATED

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_of_two_racing_conversions_exactly_one_writes(tmp_path):
    source = GENERATED / "lenet.caffemodel"
    destination = tmp_path / "out.caffemodel.h5"
    barrier = threading.Barrier(8)
    outcomes = []
    original = convert_use_case.write_as

    def save_then_wait(*args, **kwargs):
        original(*args, **kwargs)
        barrier.wait(timeout=30)  # every thread has written its temporary file: now all commit

    def convert():
        try:
            blobcast.convert(source, destination, forward_check=False)
            outcomes.append("written")
        except blobcast.BlobcastError as error:
            outcomes.append(str(error))

    convert_use_case.write_as = save_then_wait
    try:
        threads = [threading.Thread(target=convert) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        convert_use_case.write_as = original
    assert outcomes.count("written") == 1
    assert all("already exists; use --force" in o for o in outcomes if o != "written")
    assert [p.name for p in tmp_path.iterdir()] == ["out.caffemodel.h5"]
    assert blobcast.load(destination)["conv1"].blobs[0].shape == (4, 1, 3, 3)


def _lenet_snapshot(tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(CAFFE / "lenet", folder)
    for path in folder.rglob("*"):
        path.chmod(0o644 if path.is_file() else 0o755)
    return folder


def test_a_state_and_its_weights_appear_together_or_not_at_all(tmp_path, monkeypatch):
    folder = _lenet_snapshot(tmp_path)
    monkeypatch.chdir(folder)
    (folder / "snapshots" / "taken.solverstate.h5").write_bytes(b"already here")
    result = run("convert", "snapshots/sgd_bp_iter_5.solverstate", "snapshots/taken.solverstate.h5",
                 "--weights", "snapshots/new.caffemodel.h5")
    assert result.exit_code == 2 and "already exists" in result.stderr
    assert not (folder / "snapshots" / "new.caffemodel.h5").exists()  # the weights were not kept
    assert not [p for p in (folder / "snapshots").iterdir() if p.name.endswith(".partial")]


@pytest.mark.parametrize("recorded", ["/home/victim/.ssh/x.caffemodel", "../../outside/x.caffemodel"])
def test_an_untrusted_learned_net_folder_does_not_travel(tmp_path, monkeypatch, recorded):
    folder = _lenet_snapshot(tmp_path)
    monkeypatch.chdir(folder)
    state = blobcast.load("snapshots/sgd_bp_iter_5.solverstate")
    state.learned_net = recorded
    blobcast.save(state, "snapshots/crafted.solverstate")
    # The crafted name is not followed as written; the file beside the state is used.
    shutil.copy("snapshots/sgd_bp_iter_5.caffemodel", "snapshots/x.caffemodel")
    result = run("convert", "snapshots/crafted.solverstate", "snapshots/moved.solverstate",
                 "--weights", "snapshots/moved.caffemodel")
    assert result.exit_code == 0, result.output
    assert blobcast.load("snapshots/moved.solverstate").learned_net == "snapshots/moved.caffemodel"
    assert blobcast.load("snapshots/crafted.solverstate").weights_candidates() == [
        os.path.join(folder, "snapshots", "x.caffemodel")]


def test_a_replaced_onnx_model_never_sits_beside_other_data(tmp_path):
    source = tmp_path / "lenet.caffemodel"
    shutil.copy(GENERATED / "lenet.caffemodel", source)
    destination = tmp_path / "m.onnx"

    def data_files():
        return sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".data"))

    def location():
        model = onnx.load(destination, load_external_data=False)
        return {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}

    blobcast.convert(source, destination, onnx_options={"external_data": True})
    assert data_files() == ["m.onnx.data"] and location() == {"m.onnx.data"}
    first = (tmp_path / "m.onnx.data").read_bytes()[64:]  # after the header with its token
    blobcast.convert(source, destination, overwrite=True, onnx_options={"external_data": True})
    # The new data went under a new name, the old model's data stayed whole
    # until the new model replaced it, and was removed after.
    (fresh,) = data_files()
    assert fresh != "m.onnx.data" and location() == {fresh}
    assert (tmp_path / fresh).read_bytes()[64:] == first
    blobcast.convert(source, destination, overwrite=True, onnx_options={"external_data": True})
    assert data_files() == ["m.onnx.data"] and location() == {"m.onnx.data"}


def test_an_interruption_after_the_rename_says_what_was_written(tmp_path, monkeypatch):
    destination = tmp_path / "done.caffemodel"

    def convert_then_interrupted(source, written, **_options):
        with atomic_destination(written, overwrite=False) as temporary:
            shutil.copy(source, temporary)
        raise KeyboardInterrupt  # the signal lands after the rename

    monkeypatch.setattr(convert_use_case, "convert", convert_then_interrupted)
    result = run("convert", GENERATED / "lenet.caffemodel", destination)
    assert result.exit_code == 130
    assert result.stderr.strip() == f"blobcast: error: interrupted after writing {destination}"
    assert "nothing was written" not in result.stderr


def test_run_save_never_writes_over_an_input(tmp_path):
    model = tmp_path / "lenet.caffemodel"
    shutil.copy(GENERATED / "lenet.caffemodel", model)
    before = model.read_bytes()
    result = run("run", model, "--save", model, "--force")
    assert result.exit_code == 2 and "the output is the input file" in result.stderr
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 12, 12), np.float32))
    result = run("run", model, "--input", f"data={tmp_path / 'x.npy'}", "--save", tmp_path / "x.npy",
                 "--force")
    assert result.exit_code == 2 and "the output is the input file" in result.stderr
    assert model.read_bytes() == before and np.load(tmp_path / "x.npy").shape == (1, 1, 12, 12)


HOSTILE_NET = r'''name: "names"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 } } }
layer { name: "innocent\033[8m" type: "Python" bottom: "data" top: "hidden\033[0m"
        python_param { module: "evil" layer: "Evil" } }
layer { name: "relu\r\nblobcast: error: forged\x07" type: "ReLU" bottom: "nowhere" top: "out" }
'''


def test_names_from_files_are_escaped_in_every_human_readable_line(tmp_path):
    net = tmp_path / "names.prototxt"
    net.write_text(HOSTILE_NET)
    shown = run("inspect", net)
    assert shown.exit_code == 0, shown.output
    for control in ("\x1b", "\r", "\x07"):
        assert control not in shown.stdout
    assert "innocent\\x1b[8m" in shown.stdout and "Python" in shown.stdout
    assert "relu\\x0d\\x0ablobcast: error: forged\\x07" in shown.stdout
    # An error naming the layer stays one line: the forged line never appears.
    failed = run("convert", net, tmp_path / "out.caffemodel")
    assert failed.exit_code == 2
    assert len(failed.stderr.strip().splitlines()) == 1 and "\r" not in failed.stderr
    # JSON keeps the names as they are, escaped by JSON itself.
    facts = json.loads(run("inspect", net, "--json").stdout)
    assert facts["layers"][1]["name"] == "innocent\x1b[8m"


def test_the_memory_budget_option_is_checked(tmp_path):
    result = run("inspect", GENERATED / "lenet.caffemodel", "--memory-budget", "lots")
    assert result.exit_code == 2 and "write a size such as 512M" in result.stderr
    small = run("--memory-budget", "1K", "run", GENERATED / "lenet.caffemodel")
    assert small.exit_code == 2 and "over the memory budget of 1.0 KiB" in small.stderr
    assert run("run", GENERATED / "lenet.caffemodel", "--memory-budget", "1M").exit_code == 0
