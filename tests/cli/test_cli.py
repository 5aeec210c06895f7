"""The command line: summaries, JSON, exit codes, one-line errors, safe writes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from blobcast.cli import app

from ..conftest import CAFFE, GENERATED

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def blobcast_process(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "blobcast", *map(str, args)],
                          capture_output=True, text=True, **kwargs)


def test_convert_prints_one_summary_line(tmp_path):
    out = tmp_path / "lenet.caffemodel.h5"
    result = run("convert", GENERATED / "lenet.caffemodel", out)
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    assert "7 layers, 6 tensors" in lines[0] and "check: bit-exact" in lines[0]
    assert out.exists()


def test_convert_json(tmp_path):
    result = run("convert", CAFFE / "zoo" / "zoo.caffemodel", tmp_path / "z.caffemodel.h5", "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["layers"] == 86 and report["tensors"] == 30 and report["check"] == "bit-exact"
    assert report["source_format"] == "caffemodel" and report["destination_format"] == "caffemodel-h5"


def test_convert_refuses_to_overwrite_without_force(tmp_path):
    out = tmp_path / "out.caffemodel.h5"
    out.write_bytes(b"precious")
    result = run("convert", GENERATED / "lenet.caffemodel", out)
    assert result.exit_code == 2
    assert "already exists; use --force" in result.stderr
    assert out.read_bytes() == b"precious"
    assert run("convert", GENERATED / "lenet.caffemodel", out, "--force").exit_code == 0
    assert out.read_bytes() != b"precious"


def test_convert_refuses_the_input_as_output(tmp_path):
    source = tmp_path / "m.caffemodel"
    source.write_bytes((GENERATED / "lenet.caffemodel").read_bytes())
    link = tmp_path / "link.caffemodel"
    link.symlink_to(source)
    result = run("convert", source, link, "--force")
    assert result.exit_code == 2 and "the output is the input file" in result.stderr
    assert source.read_bytes() == (GENERATED / "lenet.caffemodel").read_bytes()


@pytest.mark.parametrize("content,expected", [
    (b"", "the file is empty"),
    (b"\x89HDF\r\n\x1a\n" + b"\0" * 10, "content is an HDF5 file"),
    (b"\xff\xff\xff\xff garbage", "not a valid Caffe binary model"),
])
def test_bad_input_is_one_line_exit_2_and_no_output(tmp_path, content, expected):
    source = tmp_path / "bad.caffemodel"
    source.write_bytes(content)
    out = tmp_path / "out.caffemodel.h5"
    result = blobcast_process("convert", source, out)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and expected in result.stderr
    assert str(source) in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() and os.listdir(tmp_path) == ["bad.caffemodel"]


@pytest.mark.slow
def test_debug_flag_shows_the_traceback(tmp_path):
    source = tmp_path / "bad.caffemodel"
    source.write_bytes(b"\xff\xff\xff\xff")
    result = blobcast_process("--debug", "inspect", source)
    assert result.returncode == 2 and "Traceback" in result.stderr
    result = blobcast_process("inspect", source, env={**os.environ, "BLOBCAST_DEBUG": "1"})
    assert "Traceback" in result.stderr


def test_missing_file_and_unknown_suffix(tmp_path):
    result = run("inspect", tmp_path / "nope.caffemodel")
    assert result.exit_code == 2 and "no such file" in result.stderr
    other = tmp_path / "model.weights"
    other.write_bytes(b"x")
    result = run("inspect", other)
    assert result.exit_code == 2 and "unknown file type" in result.stderr


def test_inspect_tree_shows_layers_blobs_sharing_and_totals():
    result = run("inspect", CAFFE / "shared" / "snapshots" / "shared_bp_iter_4.caffemodel")
    assert result.exit_code == 0
    text = result.stdout
    assert "ip_b InnerProduct tanh_a -> ip_b" in text
    assert "shared with ip_a" in text
    assert "totals: 5 layers, 3 tensors" in text


def test_inspect_hdf5_adds_the_raw_tree_and_stats():
    result = run("inspect", CAFFE / "zoo" / "zoo.caffemodel.h5", "--stats")
    assert result.exit_code == 0
    assert "HDF5 layout" in result.stdout and "min " in result.stdout


def test_inspect_json_has_the_same_facts():
    result = run("inspect", CAFFE / "zoo" / "zoo.caffemodel", "--json", "--stats")
    facts = json.loads(result.stdout)
    assert facts["totals"]["layers"] == 86
    bn = [layer for layer in facts["layers"] if layer["name"] == "bn"][0]
    assert [b["shape"] for b in bn["blobs"]] == [[8], [8], [1]]
    assert bn["blobs"][2]["stats"]["min"] == pytest.approx(3.7)
    assert facts["caffe_version"] == "V2"


def test_inspect_solver_state_with_solver_prototxt(caffe_dir, monkeypatch):
    monkeypatch.chdir(caffe_dir / "lenet")
    result = run("inspect", "snapshots/adadelta_h5_iter_5.solverstate.h5", "--solver",
                 "solver_adadelta_h5.prototxt", "--json")
    assert result.exit_code == 0, result.output
    facts = json.loads(result.stdout)
    assert facts["iter"] == 5 and facts["current_step"] == 1
    assert facts["learned_net_found"] == "snapshots/adadelta_h5_iter_5.caffemodel.h5"
    assert facts["solver"]["type"] == "AdaDelta" and facts["solver"]["momentum"] == 0.95
    assert facts["history"][0]["layer"] == "conv1"
    assert [t["role"] for t in facts["history"][0]["tensors"]] == [
        "mean squared gradient", "mean squared update"]


def test_inspect_reports_a_missing_learned_net(tmp_path):
    state = tmp_path / "alone.solverstate"
    state.write_bytes((CAFFE / "lenet" / "snapshots" / "sgd_bp_iter_5.solverstate").read_bytes())
    result = run("inspect", state)
    assert result.exit_code == 0
    assert "missing" in result.stdout and "sgd_bp_iter_5.caffemodel" in result.stdout


@pytest.mark.parametrize("signal_number,code,message", [
    (signal.SIGTERM, 143, "terminated; nothing was written"),
    (signal.SIGINT, 130, "interrupted; nothing was written"),
])
@pytest.mark.slow
def test_an_interrupted_conversion_leaves_nothing(tmp_path, signal_number, code, message):
    import numpy as np

    import blobcast

    big = blobcast.load(GENERATED / "lenet.caffemodel")
    big["ip1"].blobs[0] = blobcast.Blob(np.ones((4096, 16384), np.float32))  # 256 MiB
    source = tmp_path / "big.caffemodel"
    blobcast.save(big, source)
    out = tmp_path / "out.caffemodel.h5"
    process = subprocess.Popen([sys.executable, "-m", "blobcast", "convert", str(source), str(out)],
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 20
    while time.time() < deadline and not any(p.name.endswith(".partial") for p in tmp_path.iterdir()):
        time.sleep(0.01)
    process.send_signal(signal_number)
    _, errors = process.communicate(timeout=30)
    assert process.returncode == code
    assert errors.strip().splitlines() == [f"blobcast: error: {message}"]  # never a traceback
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.caffemodel"]


def test_module_entry_point_help():
    result = blobcast_process("--help")
    assert result.returncode == 0 and "convert" in result.stdout and "inspect" in result.stdout


def test_convert_state_with_its_weights(caffe_dir, monkeypatch):
    import blobcast

    monkeypatch.chdir(caffe_dir / "lenet")
    # Caffe's own .h5 weights hold no layer definitions: without --prototxt the
    # .caffemodel holds names and weights only, as Caffe's loader reads them.
    result = run("convert", "snapshots/rmsprop_h5_iter_5.solverstate.h5", "snapshots/moved.solverstate",
                 "--weights", "snapshots/moved.caffemodel")
    assert result.exit_code == 0, result.output
    assert "carries no layer definitions (weights only)" in result.stderr
    assert not blobcast.load("snapshots/moved.caffemodel").has_architecture
    result = run("convert", "snapshots/rmsprop_h5_iter_5.solverstate.h5", "snapshots/moved.solverstate",
                 "--weights", "snapshots/moved.caffemodel", "--prototxt", "lenet_train.prototxt",
                 "--force")
    assert result.exit_code == 0, result.output
    moved = blobcast.load("snapshots/moved.solverstate")
    assert moved.learned_net == "snapshots/moved.caffemodel"
    assert blobcast.load(moved.find_weights()).has_architecture
    result = run("convert", "snapshots/rmsprop_bp_iter_5.solverstate", "snapshots/moved.solverstate.h5",
                 "--weights", "snapshots/moved.caffemodel.h5", "--json", "--force")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["weights"]["destination_format"] == "caffemodel-h5"
    assert report["check"] == report["weights"]["check"] == "bit-exact"
    facts = json.loads(run("inspect", "snapshots/moved.solverstate.h5", "--json").stdout)
    assert facts["learned_net"] == "snapshots/moved.caffemodel.h5"
    assert facts["learned_net_found"] == "snapshots/moved.caffemodel.h5"
    assert facts["history"][0]["layer"] == "conv1"  # tied through the converted weights
