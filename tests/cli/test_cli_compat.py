"""The command line as a user's shell sees it, in a child process: the part
that depends on typer's and click's versions. CI also runs this module with
the oldest and the newest typer and click that pyproject.toml allows."""

import json
import subprocess
import sys

import pytest

from blobcast import __version__

from ..conftest import CAFFE, GENERATED


def blobcast(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "blobcast", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


@pytest.mark.slow
def test_every_option_has_its_own_name_and_usage_is_plain():
    shown = blobcast("convert", "--help")
    assert shown.returncode == 0
    usage = next(line for line in shown.stdout.splitlines() if "Usage:" in line)
    assert usage.split("Usage:")[1].split() == ["blobcast", "convert", "[OPTIONS]", "SOURCE",
                                                "DESTINATION"]
    for option in ("--prototxt", "--weights", "--compress", "--from", "--to", "--input", "--opset",
                   "--atol", "--rtol", "--device", "--memory-budget", "--debug", "--json"):
        assert option in shown.stdout, option
    assert "--PROTOTXT" not in shown.stdout and "--WEIGHTS" not in shown.stdout
    assert "caffemodel-h5" in shown.stdout  # --from/--to list the format names
    for command, arguments in (("inspect", ["FILE"]), ("verify", ["A", "B"]), ("run", ["MODEL"])):
        text = blobcast(command, "--help").stdout
        usage = next(line for line in text.splitlines() if "Usage:" in line)
        assert usage.split("[OPTIONS]")[1].split() == arguments


def test_command_summaries_are_whole():
    listing = blobcast("--help").stdout
    commands = listing.split("Commands")[1]
    assert "checked before the output" in commands and "..." not in commands


@pytest.mark.slow
def test_version_and_debug_anywhere(tmp_path):
    version = blobcast("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"blobcast {__version__}"
    broken = tmp_path / "broken.caffemodel"
    broken.write_bytes(b"\x00garbage")
    after = blobcast("inspect", broken, "--debug")
    before = blobcast("--debug", "inspect", broken)
    assert after.returncode == before.returncode == 2
    assert "Traceback" in after.stderr and "Traceback" in before.stderr


def test_options_by_name_work(tmp_path):
    done = blobcast("convert", CAFFE / "lenet" / "snapshots" / "sgd_h5_iter_5.caffemodel.h5",
                    tmp_path / "w.caffemodel", "--prototxt", CAFFE / "lenet" / "lenet_deploy.prototxt",
                    "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ok"] is True


@pytest.mark.slow
def test_json_on_failure_too(tmp_path):
    failed = blobcast("convert", tmp_path / "missing.caffemodel", tmp_path / "x.caffemodel.h5",
                      "--json")
    assert failed.returncode == 2
    report = json.loads(failed.stdout)
    assert report["ok"] is False and report["exit_code"] == 2 and "no such file" in report["error"]
    bad_shape = blobcast("run", GENERATED / "lenet.caffemodel", "--input", "data=1,3,x", "--json")
    assert bad_shape.returncode == 2 and "whole numbers" in json.loads(bad_shape.stdout)["error"]
    opset = blobcast("convert", GENERATED / "lenet.caffemodel", tmp_path / "x.onnx", "--opset", "99")
    assert opset.returncode == 2 and "--opset 99: blobcast writes opsets 17 to" in opset.stderr
    assert not list(tmp_path.iterdir())


def test_usage_errors_under_json_print_one_json_object():
    zoo = CAFFE / "zoo" / "zoo.caffemodel"
    for arguments, error in ((["--json", "inspect", zoo, "--no-such-option"], "No such option"),
                             (["inspect", "--json"], "Missing argument"),
                             (["--json", "no-such-command"], "No such command"),
                             (["--json"], "Missing command"),
                             (["convert", zoo, "--json"], "Missing argument"),
                             (["convert", zoo, "out.onnx", "--opset", "x", "--json"], "Invalid value")):
        shown = blobcast(*arguments)
        assert shown.returncode == 2, arguments
        report = json.loads(shown.stdout)  # exactly one object: anything more fails to parse
        assert report["ok"] is False and report["exit_code"] == 2 and error in report["error"], report
        assert error in shown.stderr and "Traceback" not in shown.stderr
    shown = blobcast("inspect", zoo, "--no-such-option")
    assert shown.returncode == 2 and shown.stdout == ""  # without --json, stdout stays empty


def test_h_and_global_options_after_the_command():
    shown = blobcast("inspect", "-h")  # typer 0.12 draws the options in a table
    assert shown.returncode == 0 and "Usage: blobcast inspect" in shown.stdout
    assert shown.stdout == blobcast("inspect", "--help").stdout
    zoo = CAFFE / "zoo" / "zoo.caffemodel"
    shown = blobcast("inspect", zoo, "--memory-budget", "64M", "--debug", "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["ok"] is True
