"""Broken and hostile files: one clean line, exit code 2, nothing written."""

import os
import runpy
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from blobcast.cli import app

from ..conftest import ROOT

runner = CliRunner()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("broken")
    cases = runpy.run_path(str(ROOT / "fixtures" / "make_broken.py"), run_name="corpus")["make_corpus"](folder)
    return folder, cases


def test_the_corpus_covers_every_format(corpus):
    _, cases = corpus
    suffixes = {name.split(".", 1)[1] for name, _ in cases}
    assert suffixes >= {"caffemodel", "caffemodel.h5", "prototxt", "solverstate", "solverstate.h5",
                        "binaryproto", "npy", "onnx"}


def test_every_broken_file_gives_one_clean_line_and_no_output(corpus, tmp_path):
    folder, cases = corpus
    failures = []
    for name, expected in cases:
        destination = tmp_path / ("out_" + name.split(".")[0] + (".npy" if name.endswith(
            (".binaryproto",)) else ".binaryproto" if name.endswith(".npy") else
            ".solverstate" if name.endswith(".solverstate.h5") else
            ".solverstate.h5" if name.endswith(".solverstate") else ".caffemodel.h5"))
        result = runner.invoke(app, ["convert", str(folder / name), str(destination)])
        lines = result.stderr.strip().splitlines()
        if (result.exit_code != 2 or len(lines) != 1 or expected not in lines[0]
                or name not in lines[0] or "Traceback" in result.stderr or destination.exists()):
            failures.append((name, result.exit_code, result.stderr.strip()[:300]))
    assert failures == []
    assert [p.name for p in tmp_path.iterdir()] == []


def test_inspect_gives_the_same_clean_errors(corpus):
    folder, cases = corpus
    for name, expected in cases:
        if name == "dangling_bottom.caffemodel":
            continue  # inspect shows a broken net; it says so in a note
        result = runner.invoke(app, ["inspect", str(folder / name)])
        assert result.exit_code == 2 and expected in result.stderr, (name, result.stderr)


def test_inspect_shows_a_dangling_bottom_as_a_note(corpus):
    folder, _ = corpus
    result = runner.invoke(app, ["inspect", str(folder / "dangling_bottom.caffemodel")])
    assert result.exit_code == 0 and "reads blob 'nowhere'" in result.stdout


def test_huge_size_claims_fail_fast_with_little_memory(corpus):
    folder, _ = corpus
    code = (f"import resource, blobcast\n"
            f"for name in ('huge_claim.caffemodel', 'huge_claim.caffemodel.h5'):\n"
            f"    try:\n        blobcast.load({str(folder)!r} + '/' + name)\n"
            f"    except blobcast.FormatError as error:\n        print('refused', name)\n"
            f"print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    lines = result.stdout.split()
    assert lines.count("refused") == 2, result.stdout + result.stderr
    assert int(lines[-1]) < 500_000  # peak resident memory in kB: far below the claimed TB


def test_a_full_disk_leaves_nothing_behind(tmp_path, monkeypatch):
    import errno

    import blobcast
    from blobcast.converters import caffe_hdf5

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(caffe_hdf5.h5py.Group, "create_dataset", full_disk)
    destination = tmp_path / "out.caffemodel.h5"
    destination.write_bytes(b"the old file")
    with pytest.raises(blobcast.FormatError, match="No space left on device"):
        blobcast.convert(ROOT / "fixtures" / "generated" / "lenet.caffemodel", destination, overwrite=True)
    assert destination.read_bytes() == b"the old file"
    assert os.listdir(tmp_path) == ["out.caffemodel.h5"]
