"""Hostile files: nothing of the user's leaks into an output, nothing hangs or
exhausts the machine. Each file of fixtures/make_hostile.py goes through
every command it applies to: exit 2, one line, no traceback, nothing written,
and none of the planted secret's bytes anywhere the run wrote."""

import os
import resource
import runpy
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

import blobcast
from blobcast.cli import app

from ..conftest import GENERATED, ROOT

runner = CliRunner()
HOSTILE = runpy.run_path(str(ROOT / "fixtures" / "make_hostile.py"), run_name="corpus")
SECRET = HOSTILE["SECRET"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    return root, HOSTILE["make_corpus"](root)


def _arguments(case, command: str, source: str, out) -> list[str]:
    stem = case.name.split(".")[0]
    if command == "convert":
        suffix = ".solverstate" if case.name.endswith(".solverstate.h5") else ".caffemodel"
        return ["convert", source, str(out / (stem + suffix))]
    if command == "onnx":
        return ["convert", source, str(out / (stem + ".onnx"))]
    if command == "inspect":
        return ["inspect", "--stats", source]
    if command == "run":
        return ["run", source, "--save", str(out / (stem + ".npz"))]
    if command == "verify":
        return ["verify", source, source]
    if command == "input":
        return ["run", str(GENERATED / "lenet.caffemodel"), "--input", f"data={source}"]
    if command == "reference":
        return ["verify", str(GENERATED / "lenet.caffemodel"), source]
    raise AssertionError(command)


def _invoke(arguments: list[str], pipe: bool, cwd):
    """(exit code, stdout, stderr). Cases with a FIFO run in a child process
    with a time limit, so a hang fails the test instead of stalling the suite."""
    if pipe:
        try:
            done = subprocess.run([sys.executable, "-m", "blobcast", *arguments], cwd=cwd,
                                  capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            return None, "", "hung"
        return done.returncode, done.stdout, done.stderr
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        result = runner.invoke(app, arguments)
    finally:
        os.chdir(previous)
    return result.exit_code, result.stdout, result.stderr


def _secret_in(folder) -> list[str]:
    found = []
    for path in folder.rglob("*"):
        if path.is_file() and SECRET[:24] in path.read_bytes():
            found.append(path.name)
    return found


@pytest.mark.slow
def test_the_corpus_covers_every_attack(corpus):
    _, cases = corpus
    names = {case.name for case in cases}
    assert {"external_storage.caffemodel.h5", "external_link_chunked.caffemodel.h5",
            "external_link_plain.caffemodel.h5", "soft_link.caffemodel.h5", "virtual.caffemodel.h5",
            "constant_outside.onnx", "subgraph_constant.onnx", "external_pipe.onnx",
            "gzip_bomb.caffemodel.h5", "constant_of_shape.onnx", "tile.onnx", "zip_bomb.npz",
            "huge_input.caffemodel", "deconvolution_blowup.caffemodel", "deep.caffemodel.h5",
            "state_group.solverstate.h5", "state_datatype.solverstate.h5",
            "pipe.caffemodel"} <= names


@pytest.mark.slow
def test_every_hostile_file_is_refused_in_one_line(corpus, tmp_path):
    root, cases = corpus
    failures = []
    for case in cases:
        source = str(root / "download" / case.name)
        for command in case.commands:
            out = tmp_path / f"{case.name}-{command}"
            out.mkdir()
            code, stdout, stderr = _invoke(_arguments(case, command, source, out) + case.options,
                                           case.pipe, root)
            lines = stderr.strip().splitlines()
            problems = []
            if code != 2:
                problems.append(f"exit {code}")
            if len(lines) != 1 or case.expected not in lines[0] or case.name not in lines[0]:
                problems.append(f"stderr {stderr.strip()[:400]!r}")
            if "Traceback" in stderr or list(out.iterdir()):
                problems.append(f"wrote {[p.name for p in out.iterdir()]}")
            if SECRET[:24].decode() in stdout + stderr or _secret_in(out):
                problems.append("the secret leaked")
            if problems:
                failures.append((case.name, command, problems))
    assert failures == [], "\n".join(map(str, failures))


@pytest.mark.slow
def test_the_secret_would_be_found_if_it_leaked(corpus, tmp_path):
    # The leak check can fail: a copy of the secret in an output is found.
    root, _ = corpus
    (tmp_path / "copy.h5").write_bytes(b"header" + (root / "secret" / "secret.txt").read_bytes())
    assert _secret_in(tmp_path) == ["copy.h5"]


def test_a_hard_link_cycle_is_walked_once(tmp_path):
    import h5py

    path = tmp_path / "cycle.caffemodel.h5"
    with h5py.File(path, "w") as handle:
        group = handle.create_group("data/conv")
        group.create_dataset("0", data=np.ones(3, np.float32))
        group["loop"] = handle["data"]  # a hard link back up: HDF5 allows it
    model = blobcast.load(path)
    assert [layer.name for layer in model.layers] == ["conv"]


def _chain_model(layers: int) -> blobcast.Model:
    """A chain of 16x16 inner products without bias: one 1 KiB tensor per layer."""
    model = blobcast.Model()
    model.name = "chain"
    model.layers.append(blobcast.Layer("data", "Input", tops=["x0"],
                                       input_param={"shape": [{"dim": [1, 16]}]}))
    for i in range(layers):
        model.layers.append(blobcast.Layer(
            f"ip{i}", "InnerProduct", bottoms=[f"x{i}"], tops=[f"x{i + 1}"],
            inner_product_param={"num_output": 16, "bias_term": False},
            blobs=[blobcast.Blob(np.eye(16, dtype=np.float32))]))
    return model


def _limit_open_files():
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


@pytest.mark.slow
def test_thousands_of_tensors_convert_with_few_file_descriptors(tmp_path):
    h5 = tmp_path / "chain.caffemodel.h5"
    blobcast.save(_chain_model(2400), h5)
    onnx_path = tmp_path / "chain.onnx"
    for source, destination, extra in ((h5, tmp_path / "chain.caffemodel", []),
                                       (h5, onnx_path, ["--external-data"]),
                                       (onnx_path, tmp_path / "back.caffemodel.h5", [])):
        done = subprocess.run([sys.executable, "-m", "blobcast", "convert", str(source),
                               str(destination), *extra], capture_output=True, text=True,
                              preexec_fn=_limit_open_files, timeout=300)
        assert done.returncode == 0, done.stderr
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    data_files = [p for p in tmp_path.iterdir()
                  if p.name.startswith("chain.onnx.") and p.name.endswith(".data")]
    assert len(data_files) == 1 and data_files[0].stat().st_size >= 2400 * 1024
