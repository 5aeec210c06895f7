"""A solver's `net:` leads blobcast to no file outside the solver's folder."""

import os
import shutil

import pytest
from typer.testing import CliRunner

from blobcast.cli import app

from ..conftest import CAFFE

runner = CliRunner()


@pytest.mark.parametrize("how", ["absolute", "dotdot", "link"])
def test_a_solvers_net_outside_its_folder_is_not_read(tmp_path, monkeypatch, how):
    run_folder = tmp_path / "run"
    run_folder.mkdir()
    for name in ("solver_sgd_bp.prototxt", "snapshots/sgd_bp_iter_5.solverstate",
                 "snapshots/sgd_bp_iter_5.caffemodel"):
        (run_folder / name).parent.mkdir(exist_ok=True)
        shutil.copy(CAFFE / "lenet" / name, run_folder / name)
    # another project's net, its layers named so that any trace of it shows
    other = tmp_path / "other"
    other.mkdir()
    text = (CAFFE / "lenet" / "lenet_train.prototxt").read_text()
    for layer in ("conv1", "conv2", "ip1", "ip2"):
        text = text.replace(f'"{layer}"', f'"private_{layer}"')
    (other / "net.prototxt").write_text(text)
    named = {"absolute": str(other / "net.prototxt"), "dotdot": "../other/net.prototxt",
             "link": "linked.prototxt"}[how]
    if how == "link":
        os.symlink(other / "net.prototxt", run_folder / "linked.prototxt")
    solver = run_folder / "solver_sgd_bp.prototxt"
    solver.write_text(solver.read_text().replace('net: "lenet_train.prototxt"', f'net: "{named}"'))
    monkeypatch.chdir(run_folder)
    for arguments in ([], ["--json"]):
        result = runner.invoke(app, ["inspect", "snapshots/sgd_bp_iter_5.solverstate",
                                     "--solver", str(solver), *arguments])
        assert result.exit_code == 0, result.output
        assert "private_" not in result.output
        assert f"the solver's net {named!r} is not followed" in result.output.replace("\n", "")
