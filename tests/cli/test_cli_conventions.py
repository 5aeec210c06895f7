"""The conventions every command shares: -h, the options that go before or
after the command, every target and the real default opset in --help."""

import json
import re

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from blobcast.cli import app
from blobcast.converters import onnx_versions
from blobcast.targets import TARGETS

from ..conftest import CAFFE

ZOO = str(CAFFE / "zoo" / "zoo.caffemodel")
runner = CliRunner()
COMMANDS = sorted(get_command(app).commands)


def run(*args):
    return runner.invoke(app, [str(a) for a in args], prog_name="blobcast")


def _flat(text: str) -> str:
    """The help's words in order, without the frame typer 0.12 draws around them."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


@pytest.mark.parametrize("command", [[], *[[name] for name in COMMANDS]], ids=lambda c: " ".join(c) or "-")
def test_h_is_help_everywhere(command):
    result = run(*command, "-h")
    assert result.exit_code == 0, result.output
    assert " ".join(["Usage:", "blobcast", *command]) in _flat(result.output)
    assert result.output == run(*command, "--help").output


def test_json_before_or_after_the_command_gives_the_same_report():
    before, after = run("--json", "inspect", ZOO), run("inspect", ZOO, "--json")
    assert before.exit_code == after.exit_code == 0, before.output
    assert json.loads(before.stdout) == json.loads(after.stdout)
    assert json.loads(before.stdout)["ok"] is True


@pytest.mark.parametrize("where", ["before", "after"])
def test_memory_budget_before_or_after_the_command(tmp_path, where):
    options = ["--memory-budget", "1K"]
    command = ["convert", ZOO, tmp_path / "zoo.onnx"]
    result = run(*(options + command if where == "before" else command + options))
    assert result.exit_code == 2
    assert "over the memory budget of 1.0 KiB" in result.output
    assert not (tmp_path / "zoo.onnx").exists()


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_before_or_after_the_command_shows_the_traceback(tmp_path, where):
    broken = tmp_path / "cut.caffemodel"
    broken.write_bytes(open(ZOO, "rb").read()[:1000])
    command = ["inspect", broken]
    result = run(*(["--debug"] + command if where == "before" else command + ["--debug"]))
    assert result.exit_code == 2
    assert "Traceback" in result.output and "not a valid Caffe binary model" in result.output
    assert "Traceback" not in run(*command).output


def test_help_names_every_target():
    for command in ("convert", "inspect"):
        shown = _flat(run(command, "-h").output)
        assert {name for name in TARGETS if name not in re.findall(r"[\w.-]+", shown)} == set()


def test_help_gives_the_default_opset_of_the_installed_onnxruntime(monkeypatch):
    import onnx

    newest_onnx = onnx.defs.onnx_opset_version()  # the installed onnx bounds it too
    monkeypatch.setattr(onnx_versions, "installed_runtime", lambda: "1.23.2")  # runs opset 23 at most
    assert f"default {min(23, newest_onnx)}:" in _flat(run("convert", "-h").output)
    monkeypatch.setattr(onnx_versions, "installed_runtime", lambda: "1.17.3")
    assert f"default {min(20, newest_onnx)}:" in _flat(run("convert", "-h").output)


def test_draw_replaces_an_existing_drawing_only_with_force(tmp_path):
    drawing = tmp_path / "zoo.dot"
    drawing.write_text("mine")
    refused = run("draw", ZOO, drawing)
    assert refused.exit_code == 2 and "already exists; use --force" in refused.output
    assert drawing.read_text() == "mine"
    assert run("draw", ZOO, drawing, "--force").exit_code == 0
    assert drawing.read_text().startswith("digraph")
