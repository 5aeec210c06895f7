"""The memory budget: how much blobcast may allocate because a file says so.

A file's header can claim any size: a 5 KB gzip dataset that inflates to
1.5 GB, an ONNX ConstantOfShape of 10^12 elements, a 1x3x7x7 net whose
Deconvolution stride blows a blob up to terabytes. Every such allocation is
checked against the budget before it happens. Values viewed in place from a
file (memory-mapped) do not count: the file's own size bounds them.

The default is 4 GiB; `--memory-budget SIZE` or the BLOBCAST_MEMORY_BUDGET
variable raise or lower it (e.g. 512M, 16G, or a number of bytes).
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager

from .errors import BlobcastError

DEFAULT_MEMORY_BUDGET = 4 * 2**30
ENVIRONMENT_VARIABLE = "BLOBCAST_MEMORY_BUDGET"
_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20,
          "mib": 2**20, "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40, "tib": 2**40}
_override: int | None = None
_reserved = 0  # bytes held by work in progress that every check must count (the other side of a check)


class BudgetExceeded(BlobcastError):
    """An input asks for more memory than the budget allows."""


def parse_size(text: str) -> int:
    """'4G', '512M', '1.5GiB', '1000000' -> bytes."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise BlobcastError(f"memory budget {text!r}: write a size such as 512M, 4G or 16GiB")
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size <= 0:
        raise BlobcastError(f"memory budget {text!r}: it must be positive")
    return size


def memory_budget() -> int:
    if _override is not None:
        return _override
    configured = os.environ.get(ENVIRONMENT_VARIABLE, "").strip()
    return parse_size(configured) if configured else DEFAULT_MEMORY_BUDGET


def set_memory_budget(size: int | str | None) -> None:
    """Set the budget for this process (None: back to the variable or the default)."""
    global _override
    _override = None if size is None else (size if isinstance(size, int) else parse_size(size))


def budget_setting() -> int | None:
    """The budget set for this process (None: the variable or the default)."""
    return _override


@contextmanager
def budget(size: int | str):
    """The budget inside a `with` block (tests, library callers)."""
    global _override
    previous = _override
    set_memory_budget(size)
    try:
        yield
    finally:
        _override = previous


@contextmanager
def reserved(nbytes: int):
    """Inside the block every check counts `nbytes` more: what is already
    held (one side's blobs, while the other side of a comparison runs)."""
    global _reserved
    previous = _reserved
    _reserved += int(nbytes)
    try:
        yield
    finally:
        _reserved = previous


def held_bytes(arrays) -> int:
    """The bytes of a collection of arrays (each counted once)."""
    return sum({id(a): int(getattr(a, "nbytes", 0)) for a in arrays}.values())


def human_size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if count < 1024 or unit == "PiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.0f} B"


def check_allocation(nbytes: int, what: str, path: str | None = None) -> None:
    """Refuse (BudgetExceeded) when `what` would need more than the budget."""
    limit = memory_budget()
    if nbytes + _reserved > limit:
        besides = f" beside {human_size(_reserved)} already held" if _reserved else ""
        raise BudgetExceeded(f"{what} needs {human_size(nbytes)}{besides}, over the memory budget of "
                             f"{human_size(limit)} (raise it with --memory-budget)", path)
