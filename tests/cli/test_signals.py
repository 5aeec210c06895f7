"""SIGINT and SIGTERM at chosen steps of a real `blobcast` process: one line,
exit 130 or 143, nothing left behind, and the line true. The process pauses
at a named step through its test hook (BLOBCAST_PAUSE_AT), the test sends
the signal there."""

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import blobcast

from ..conftest import GENERATED

pytestmark = pytest.mark.slow


def _start(arguments, steps, marks):
    env = {**os.environ, "BLOBCAST_PAUSE_AT": ",".join(steps), "BLOBCAST_PAUSE_DIR": str(marks)}
    return subprocess.Popen([sys.executable, "-m", "blobcast", *map(str, arguments)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _signal_at(process, marks, step, number):
    deadline = time.monotonic() + 60
    while not (marks / step).exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"never reached {step}"
        time.sleep(0.01)
    process.send_signal(number)


def _finish(process):
    out, errors = process.communicate(timeout=60)
    return process.returncode, out, errors.strip().splitlines()


@pytest.fixture
def folder(tmp_path):
    work, marks = tmp_path / "work", tmp_path / "marks"
    work.mkdir()
    marks.mkdir()
    shutil.copy(GENERATED / "lenet.caffemodel", work / "lenet.caffemodel")
    return work, marks


@pytest.mark.parametrize("number,code,word", [(signal.SIGTERM, 143, "terminated"),
                                              (signal.SIGINT, 130, "interrupted")])
@pytest.mark.parametrize("json_output", [False, True])
def test_a_signal_during_start_up_ends_with_one_line(folder, number, code, word, json_output):
    work, marks = folder
    process = _start(["convert", work / "lenet.caffemodel", work / "m.onnx"]
                     + (["--json"] if json_output else []), ["startup"], marks)
    _signal_at(process, marks, "startup", number)
    returncode, out, lines = _finish(process)
    assert returncode == code and lines == [f"blobcast: error: {word}; nothing was written"]
    if json_output:
        assert '"exit_code": %d' % code in out
    assert sorted(p.name for p in work.iterdir()) == ["lenet.caffemodel"]


@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGTERM])
def test_a_second_signal_during_the_clean_up_leaves_no_partial_folder(folder, second):
    work, marks = folder
    process = _start(["convert", work / "lenet.caffemodel", work / "m.onnx", "--external-data"],
                     ["write", "cleanup"], marks)
    _signal_at(process, marks, "write", signal.SIGINT)
    _signal_at(process, marks, "cleanup", second)
    returncode, _, lines = _finish(process)
    assert returncode == 130 and lines == ["blobcast: error: interrupted; nothing was written"]
    assert sorted(p.name for p in work.iterdir()) == ["lenet.caffemodel"]


def test_two_signals_at_once_leave_no_partial_folder(folder):
    work, marks = folder
    process = _start(["convert", work / "lenet.caffemodel", work / "m.onnx", "--external-data"],
                     ["write"], marks)
    _signal_at(process, marks, "write", signal.SIGTERM)
    process.send_signal(signal.SIGTERM)
    returncode, _, lines = _finish(process)
    assert returncode == 143 and lines == ["blobcast: error: terminated; nothing was written"]
    assert sorted(p.name for p in work.iterdir()) == ["lenet.caffemodel"]


@pytest.mark.parametrize("replacing", [False, True])
def test_a_signal_during_the_renames_lets_them_finish_and_says_so(folder, replacing):
    work, marks = folder
    model = work / "m.onnx"
    if replacing:  # the old model's data stays under m.onnx.data until the new model is in place
        blobcast.convert(work / "lenet.caffemodel", model, onnx_options={"external_data": True})
    process = _start(["convert", work / "lenet.caffemodel", model, "--external-data", "--force"],
                     ["commit"], marks)
    _signal_at(process, marks, "commit", signal.SIGTERM)  # the data file is placed, the model not yet
    returncode, _, lines = _finish(process)
    assert returncode == 143 and lines == [f"blobcast: error: terminated after writing {model}"]
    data = [p.name for p in work.iterdir() if p.name.endswith(".data")]
    assert sorted(p.name for p in work.iterdir() if not p.name.endswith(".data")) == [
        "lenet.caffemodel", "m.onnx"]
    assert len(data) == 1 and (data[0] != "m.onnx.data") == replacing  # the old data is removed
    assert blobcast.load(model)["conv1"].blobs[0].shape == (4, 1, 3, 3)


def test_a_signal_before_the_clean_up_starts_still_leaves_no_partial_folder(folder):
    work, marks = folder
    model = work / "m.caffemodel.h5"
    process = _start(["convert", work / "lenet.caffemodel", model], ["unwind"], marks)
    _signal_at(process, marks, "unwind", signal.SIGINT)  # renamed into place; the folder not yet removed
    returncode, _, lines = _finish(process)
    assert returncode == 130 and lines == [f"blobcast: error: interrupted after writing {model}"]
    assert sorted(p.name for p in work.iterdir()) == ["lenet.caffemodel", "m.caffemodel.h5"]
