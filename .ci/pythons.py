"""Print the interpreters CI tests with: the oldest and the newest Python
that pyproject.toml declares, one path a line.

The oldest is the lower bound of requires-python; the newest is the highest
"Programming Language :: Python :: 3.N" classifier (requires-python has no
upper bound). Each is looked for under pyenv ($PYENV_ROOT, else ~/.pyenv) and
on PATH; exit 1, naming what is missing, when either cannot be found or the
declarations disagree.
"""

from __future__ import annotations

import operator
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
COMPARISONS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt,
               "==": operator.eq, "!=": operator.ne}


def fail(message: str) -> None:
    sys.exit(f"CI: {message}")


def declared() -> tuple[str, list[tuple[int, int]]]:
    """(requires-python, the minor versions the classifiers name)."""
    text = PYPROJECT.read_text(encoding="utf-8")
    found = re.search(r'^requires-python\s*=\s*"([^"]+)"', text, re.M)
    if not found:
        fail(f"{PYPROJECT.name} declares no requires-python")
    classifiers = re.findall(r'"Programming Language :: Python :: (\d+)\.(\d+)"', text)
    return found.group(1), sorted((int(major), int(minor)) for major, minor in classifiers)


def allowed(specifier: str, version: tuple[int, int]) -> bool:
    """Whether major.minor meets a requires-python of clauses like >=3.10, <4."""
    for clause in specifier.split(","):
        parsed = re.fullmatch(r"\s*(>=|<=|==|!=|>|<)\s*(\d+)(?:\.(\d+))?(?:\.\d+)*\s*", clause)
        if not parsed:
            fail(f"requires-python clause {clause.strip()!r} is not one CI reads (>=, >, <=, <, "
                 "==, != with a version)")
        bound = (int(parsed.group(2)), int(parsed.group(3) or 0))
        if not COMPARISONS[parsed.group(1)](version, bound):
            return False
    return True


def lower_bound(specifier: str) -> tuple[int, int]:
    bounds = [(int(m.group(1)), int(m.group(2))) for m in
              re.finditer(r">=\s*(\d+)\.(\d+)", specifier)]
    if not bounds:
        fail(f"requires-python {specifier!r} has no lower bound (>=X.Y)")
    return max(bounds)


def candidates(version: tuple[int, int]) -> list[str]:
    name = f"python{version[0]}.{version[1]}"
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    # highest patch release first: 3.10.13 before 3.10.9
    installed = sorted(root.glob(f"versions/{version[0]}.{version[1]}.*/bin/{name}"),
                       key=lambda p: [int(x) for x in re.findall(r"\d+", p.parts[-3])], reverse=True)
    on_path = shutil.which(name)
    return [str(p) for p in installed] + ([on_path] if on_path else [])


def find(version: tuple[int, int]) -> str:
    for path in candidates(version):
        try:
            reported = subprocess.run([path, "-c", "import sys; print(*sys.version_info[:2])"],
                                      capture_output=True, text=True, timeout=60).stdout.split()
        except (OSError, subprocess.TimeoutExpired):
            continue
        if reported == [str(version[0]), str(version[1])]:
            return path
    fail(f"no Python {version[0]}.{version[1]} found (looked under pyenv and on PATH); "
         f"pyproject.toml declares it, so CI must test it: install it (pyenv install "
         f"{version[0]}.{version[1]})")
    raise AssertionError  # fail() exits


def main() -> None:
    specifier, classified = declared()
    oldest = lower_bound(specifier)
    if not classified:
        fail(f"{PYPROJECT.name} names no 'Programming Language :: Python :: 3.N' classifier: "
             "CI takes the newest Python from them")
    outside = [v for v in classified if not allowed(specifier, v)]
    if outside or oldest not in classified:
        fail(f"the classifiers {[f'{a}.{b}' for a, b in classified]} and requires-python "
             f"{specifier!r} disagree: the classifiers must name the oldest and stay within it")
    paths = [find(oldest), find(classified[-1])]  # both found before either is printed
    print("\n".join(paths))


if __name__ == "__main__":
    main()
