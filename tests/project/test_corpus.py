"""The corpus harness (benchmarks/corpus.py) on real files: every step a
user takes, and one line per failure."""

import importlib.util
import json
import sys

import pytest

from ..conftest import ROOT


def _corpus():
    spec = importlib.util.spec_from_file_location("corpus", ROOT / "benchmarks" / "corpus.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("corpus", module)  # dataclasses look their module up
    spec.loader.exec_module(sys.modules["corpus"])
    return sys.modules["corpus"]


@pytest.mark.slow
def test_the_corpus_takes_a_training_snapshot_through_every_step(capsys):
    corpus = _corpus()
    assert corpus.main(["--only", "lenet-snapshot/lenet_iter_10000", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["repo"] == "ethereon/caffe-tensorflow" and row["weights"] == "file"
    assert row["steps"] == dict.fromkeys(corpus.STEPS, "ok")


def test_every_corpus_file_is_in_the_fixtures_with_its_source():
    corpus = _corpus()
    assert len(corpus.CORPUS) >= 30
    for entry in corpus.CORPUS:
        assert (corpus.REAL / entry.path).is_file(), entry.path
        assert entry.repo, entry.path  # SOURCE.md names the repository
    assert len({entry.repo for entry in corpus.CORPUS}) >= 20
    table = corpus.markdown([{"file": "a", "repo": "r", "note": "", "steps": {"inspect": "a | b"}}])
    assert "| FAIL |" in table and "inspect: a / b" in table  # its text cannot break the table
