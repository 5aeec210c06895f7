"""Comparing what two models hold and compute: bit-exact comparison of models
and solver states (the check after writing), and the element-wise numeric
comparison of blobs (the forward checks and `verify`).

Each blob is compared element by element with a symmetric measure: an
element passes when |a - b| <= atol + rtol * max(|a|, |b|). The result also
gives max and mean absolute error, the max relative error |a - b| / max(|a|, |b|),
cosine similarity, and the smallest atol (at the given rtol) and rtol (at the
given atol) that would have passed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .model import Model
from .solver import SolverState
from .tensor import same_bits


def _tensor_map(model: Model) -> dict:
    out = {}
    for layer in model.layers:
        for j, blob in enumerate(layer.blobs):
            if blob is not None:
                out[(layer.name, j)] = blob
    return out


def model_differences(source: Model, written: Model, *, architecture: bool = True,
                      tensors: bool = True, diffs: bool = True, limit: int = 10) -> list[str]:
    """What differs between a model and its written copy (empty when identical)."""
    problems: list[str] = []
    if architecture and source.has_architecture and written.has_architecture:
        if [layer.name for layer in source.layers] != [layer.name for layer in written.layers]:
            problems.append("the layers differ in names or order")
        else:
            if source.net.to_dict() != written.net.to_dict():
                problems.append("net-level settings differ")
            for a, b in zip(source.layers, written.layers):
                if a.spec.to_dict() != b.spec.to_dict():
                    problems.append(f"layer {a.name!r}: settings differ")
    if not tensors:
        return problems
    ours, theirs = _tensor_map(source), _tensor_map(written)
    for key in ours.keys() - theirs.keys():
        problems.append(f"layer {key[0]!r} blob {key[1]}: missing from the output")
    for key in theirs.keys() - ours.keys():
        problems.append(f"layer {key[0]!r} blob {key[1]}: not in the source")
    for key in ours.keys() & theirs.keys():
        a, b = ours[key], theirs[key]
        if not same_bits(a.data, b.data):
            problems.append(f"layer {key[0]!r} blob {key[1]}: values differ")
        elif diffs and (a.diff is None) != (b.diff is None):
            problems.append(f"layer {key[0]!r} blob {key[1]}: gradient present in only one")
        elif diffs and a.diff is not None and not same_bits(a.diff, b.diff):
            problems.append(f"layer {key[0]!r} blob {key[1]}: gradients differ")
        if len(problems) >= limit:
            break
    return problems


def state_differences(source: SolverState, written: SolverState) -> list[str]:
    problems = []
    for name in ("iter", "current_step", "learned_net"):
        if getattr(source, name) != getattr(written, name):
            problems.append(f"{name} differs")
    if len(source.history) != len(written.history):
        problems.append(f"history count {len(source.history)} became {len(written.history)}")
    else:
        for i, (a, b) in enumerate(zip(source.history, written.history)):
            if not same_bits(a, b):
                problems.append(f"history tensor {i} differs")
    return problems


# float32 defaults. rtol 1e-3 (about 8000 float32 ulps) leaves room for the
# different summation orders of two engines in long dot products; atol 1e-5
# covers values near zero left by cancellation.
DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-3


@dataclass
class BlobComparison:
    name: str
    shape: list[int]
    passed: bool
    max_abs_error: float
    mean_abs_error: float
    max_rel_error: float
    cosine_similarity: float | None
    min_atol: float
    min_rtol: float
    mismatched: int
    nan_mismatches: int = 0
    nonfinite: int = 0
    problem: str = ""


def _to_host(array) -> np.ndarray:
    return np.asarray(array.get() if hasattr(array, "get") else array)


def _mismatch(name: str, shape, count: int, problem: str) -> BlobComparison:
    inf = float("inf")
    return BlobComparison(name, list(shape), False, inf, inf, inf, None, inf, inf, count,
                          problem=problem)


def compare_arrays(name: str, a, b, atol: float = DEFAULT_ATOL,
                   rtol: float = DEFAULT_RTOL, allow_nonfinite: bool = False) -> BlobComparison:
    """Compare two blobs element by element.

    NaN and Inf are never close to anything: a blob holding them fails,
    unless `allow_nonfinite` is given and both sides hold the very same
    non-finite values in the same places (then only the finite ones are
    measured). Cosine similarity is given only when every value is finite."""
    a, b = _to_host(a), _to_host(b)
    if a.shape != b.shape:
        return _mismatch(name, a.shape, int(max(a.size, b.size)),
                         f"shapes differ: {list(a.shape)} vs {list(b.shape)}")
    x, y = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    finite_x, finite_y = np.isfinite(x), np.isfinite(y)
    both = finite_x & finite_y
    nonfinite = int(x.size - np.count_nonzero(both))
    # Non-finite positions that differ: NaN against a number, +Inf against -Inf, ...
    agree = ~both & (np.isnan(x) & np.isnan(y) | (x == y))
    nan_mismatches = int(np.count_nonzero(~both & ~agree))
    x, y = x[both], y[both]
    difference = np.abs(x - y)
    scale = np.maximum(np.abs(x), np.abs(y))
    with np.errstate(invalid="ignore", divide="ignore"):
        relative = np.where(scale > 0, difference / np.where(scale > 0, scale, 1), 0.0)
        needed_rtol = np.where(difference <= atol, 0.0,
                               np.where(scale > 0, (difference - atol) / np.where(scale > 0, scale, 1),
                                        np.inf))
    failing = difference > atol + rtol * scale
    cosine = None
    if not nonfinite:
        norms = float(np.linalg.norm(x) * np.linalg.norm(y)) if x.size else 0.0
        cosine = float(np.dot(x, y) / norms) if norms > 0 else (1.0 if not difference.any() else None)
    mismatched = int(np.count_nonzero(failing)) + nan_mismatches
    problem = ""
    if nan_mismatches:
        problem = f"{nan_mismatches} NaN/Inf positions differ"
    elif nonfinite and not allow_nonfinite:
        mismatched += nonfinite
        problem = (f"{nonfinite} NaN/Inf values (the same on both sides; --allow-nonfinite "
                   "accepts that)")
    return BlobComparison(
        name=name, shape=list(a.shape), passed=mismatched == 0,
        max_abs_error=float(difference.max()) if difference.size else 0.0,
        mean_abs_error=float(difference.mean()) if difference.size else 0.0,
        max_rel_error=float(relative.max()) if relative.size else 0.0,
        cosine_similarity=cosine,
        min_atol=float(np.max(difference - rtol * scale, initial=0.0)),
        min_rtol=float(np.max(needed_rtol, initial=0.0)),
        mismatched=mismatched, nan_mismatches=nan_mismatches, nonfinite=nonfinite,
        problem=problem)
