"""Every shell and Python example in README.md and docs/ runs, against files
the repository has.

An HTML comment before each fenced block says what to do with it:
`<!-- example: run -->` (`run; exit N` when the block must end with exit
code N), `<!-- example: output -->` (every line of the block is in what the
run block before it printed), `<!-- example: file NAME -->` (write the block
to NAME for later blocks of the page) or `<!-- example: skip (why) -->`. The blocks of one page
run in order in one scratch folder whose `fixtures/` is the repository's.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
MARKER = re.compile(r"<!-- example: (?P<action>run|output|file|skip)(?P<detail>[^>]*?) -->")
FENCE = re.compile(r"^(?P<indent> *)```(?P<language>[\w-]*)\s*$")
RUNNABLE = {"sh", "python"}


@dataclass
class Block:
    page: Path
    line: int
    language: str
    code: str
    action: str | None  # run, file, skip; None: no marker
    detail: str

    @property
    def expected_exit(self) -> int:
        found = re.search(r"exit (\d+)", self.detail)
        return int(found[1]) if found else 0

    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def fenced_blocks(page: Path) -> list[Block]:
    lines = page.read_text().splitlines()
    blocks, index, previous = [], 0, ""
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            if lines[index].strip():
                previous = lines[index]
            index += 1
            continue
        indent, body = opening["indent"], []
        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            body.append(lines[end][len(indent):])
            end += 1
        marker = MARKER.search(previous)
        blocks.append(Block(page, index + 1, opening["language"], "\n".join(body) + "\n",
                            marker["action"] if marker else None,
                            marker["detail"].strip(" ;") if marker else ""))
        index, previous = end + 1, ""
    return blocks


ALL_BLOCKS = [block for page in PAGES for block in fenced_blocks(page)]


def test_every_fenced_block_says_whether_it_runs():
    unmarked = [block.where() for block in ALL_BLOCKS if block.action is None]
    assert unmarked == [], "fenced blocks without an <!-- example: ... --> comment"
    unexplained = [block.where() for block in ALL_BLOCKS
                   if block.action == "skip" and not re.fullmatch(r"\(.+\)", block.detail)]
    assert unexplained == [], "skipped blocks say why, in parentheses"
    not_runnable = [block.where() for block in ALL_BLOCKS
                    if block.action == "run" and block.language not in RUNNABLE]
    assert not_runnable == []
    assert sum(block.action == "run" for block in ALL_BLOCKS) >= 20
    first_blocks = [page_blocks[0].where() for page_blocks in map(fenced_blocks, PAGES)
                    if page_blocks and page_blocks[0].action == "output"]
    assert first_blocks == []


def test_examples_name_only_files_the_repository_has():
    missing = {(block.where(), path) for block in ALL_BLOCKS if block.action in ("run", "file")
               for path in re.findall(r"fixtures/[\w./-]+", block.code)
               if not (ROOT / path.rstrip(".")).exists()}
    assert missing == set()


def test_python_examples_compile():
    for block in ALL_BLOCKS:
        if block.language == "python" and block.action in ("run", "file"):
            compile(block.code, block.where(), "exec")


def _scratch(tmp_path: Path) -> dict:
    """A folder with the repository's fixtures, and `blobcast` on PATH as
    this interpreter runs it."""
    (tmp_path / "fixtures").symlink_to(ROOT / "fixtures")
    bin_dir = tmp_path / ".bin"
    bin_dir.mkdir()
    (bin_dir / "blobcast").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m blobcast "$@"\n')
    (bin_dir / "blobcast").chmod(0o755)
    (bin_dir / "python").symlink_to(sys.executable)
    environment = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
                   "COLUMNS": "120"}
    environment.pop("BLOBCAST_DEBUG", None)
    return environment


def _run_block(block: Block, folder: Path, environment: dict) -> subprocess.CompletedProcess:
    if block.language == "sh":
        command = ["bash", "-e", "-o", "pipefail", "-c", block.code]
    else:
        command = [sys.executable, "-c", block.code]
    return subprocess.run(command, cwd=folder, env=environment, capture_output=True, text=True,
                          timeout=600)


PAGES_WITH_EXAMPLES = [page for page in PAGES
                       if any(block.action == "run" for block in fenced_blocks(page))]


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES_WITH_EXAMPLES, ids=lambda page: str(page.relative_to(ROOT)))
def test_the_examples_of_a_page_run(page, tmp_path):
    environment, printed = _scratch(tmp_path), None
    for block in fenced_blocks(page):
        if block.action == "file":
            (tmp_path / block.detail).write_text(block.code)
        elif block.action == "output":
            assert printed is not None, f"{block.where()}: no run block before it"
            lines = [line.strip() for line in block.code.splitlines() if line.strip()]
            missing = [line for line in lines if line not in printed]
            assert missing == [], f"{block.where()}: not printed by the block before it:\n{printed}"
        elif block.action == "run":
            result = _run_block(block, tmp_path, environment)
            printed = result.stdout + result.stderr
            assert result.returncode == block.expected_exit, (
                f"{block.where()} exited {result.returncode}, not {block.expected_exit}:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
            assert "Traceback" not in result.stderr, f"{block.where()}:\n{result.stderr}"


@pytest.mark.slow
def test_the_quick_start_runs_after_its_install_step(tmp_path):
    """The README's first command, less the virtual environment it makes."""
    quick_start = next(block for block in fenced_blocks(ROOT / "README.md")
                       if "fixtures/caffe/zoo/zoo.caffemodel zoo.caffemodel.h5" in block.code)
    steps = quick_start.code.strip().split(" && ")
    assert steps[:2] == ["python3 -m venv .venv", ".venv/bin/pip install -q ."]
    command = " && ".join(step.replace(".venv/bin/", "") for step in steps[2:])
    result = subprocess.run(["bash", "-e", "-c", command], cwd=tmp_path, env=_scratch(tmp_path),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "layers (86)" in result.stdout and (tmp_path / "zoo.caffemodel.h5").exists()


def test_the_readme_is_a_front_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 15_000
    linked = set(re.findall(r"\]\((docs/[\w/.-]+\.md)", readme))
    pages = {str(page.relative_to(ROOT)) for page in PAGES[1:]}
    assert pages - linked == set(), "docs pages the README's map does not link"
    assert ".venv/bin/python -m pytest -q" in readme


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", page.read_text(), flags=re.S), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_links_between_pages_lead_to_pages_and_headings_that_exist():
    broken = []
    for page in PAGES:
        for target, anchor in re.findall(r"\]\(([\w./-]+\.md)(?:#([\w-]*))?\)", page.read_text()):
            linked = (page.parent / target).resolve()
            if not linked.exists() or (anchor and anchor not in _anchors(linked)):
                broken.append(f"{page.relative_to(ROOT)} -> {target}#{anchor}")
    assert broken == []


def test_the_contributing_layout_names_every_module():
    page = (ROOT / "docs" / "contributing.md").read_text()
    modules = [path for folder in ("src/blobcast", "converters", "benchmarks", "scripts", "fixtures")
               for path in (ROOT / folder).rglob("*.py") if not path.name.startswith("__")]
    names = {path: (path.name, path.stem, path.relative_to(ROOT)) for path in modules}
    unnamed = sorted(str(path.relative_to(ROOT)) for path in modules
                     if not any(f"`{name}`" in page for name in names[path]))
    assert unnamed == [], "modules docs/contributing.md's layout table does not name"
