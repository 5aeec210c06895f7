"""Comparing what two models hold and compute: bit-exact comparison of models
and solver states (the check after writing), and the element-wise numeric
comparison of blobs (the forward checks and `verify`).

Each blob is compared element by element with a symmetric measure: an
element passes when |a - b| <= atol + rtol * max(|a|, |b|). The result also
gives max and mean absolute error, the max relative error |a - b| / max(|a|, |b|),
cosine similarity, and the smallest atol (at the given rtol) and rtol (at the
given atol) that would have passed.

Judged relative to its range (what `verify` does), a blob's atol is at most
rtol times its largest value: an atol sized for values near 1 would pass
anything in a blob whose values are all near 1e-9. A blob whose largest value
is below float32's smallest normal number has no range to judge against: it is
compared with the plain atol and marked too small to judge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..model import Model
from ..solver import SolverState, legacy_history_fits
from ..tensor import reshaped, same_bits


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
            if legacy_history_fits(tuple(a.shape), tuple(b.shape)):
                a = reshaped(a, b.shape)  # Caffe's legacy 4-D history, written in its parameter's shape
            if not same_bits(a, b):
                problems.append(f"history tensor {i} differs")
    return problems


# float32 defaults. rtol 1e-3 (about 8000 float32 ulps) leaves room for the
# different summation orders of two engines in long dot products; atol 1e-5
# covers values near zero left by cancellation.
DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-3


@dataclass
class RoundingCheck:
    """A failed blob's two sides against a float64 run of the engine (the
    exact value, as near as float64 gets): how far each strays from it, and
    how far float32 rounding alone may take a value there."""

    reference: str  # which side's model ran in float64
    a_deviation: float  # max |A - float64 run|
    b_deviation: float  # max |B - float64 run|
    rounding: float  # what float32 rounding explains at this blob
    a_within: bool
    b_within: bool
    strays: str  # "", "A", "B" or "both"
    verdict: str


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
    atol: float = DEFAULT_ATOL  # the tolerances this blob was judged by
    rtol: float = DEFAULT_RTOL
    peak: float = 0.0  # largest finite |value| on either side: the blob's range
    effective_atol: float = DEFAULT_ATOL  # atol as applied (at most rtol * peak, judged by range)
    too_small: str = ""  # why the blob's values are too small to judge, if they are
    rounding: RoundingCheck | None = None  # on a failure: both sides against a float64 run


def to_host(array) -> np.ndarray:
    return np.asarray(array.get() if hasattr(array, "get") else array)


def failed_comparison(name: str, shape, count: int, problem: str) -> BlobComparison:
    inf = float("inf")
    return BlobComparison(name, list(shape), False, inf, inf, inf, None, inf, inf, count,
                          problem=problem)


# float32's smallest normal number: below it values are subnormal (or 0) and
# carry too few significant bits to be judged relative to their range.
FLOAT32_TINY = float(np.finfo(np.float32).tiny)


def _largest_finite(xp, flat, step: int) -> float:
    """The largest finite |value| of a flat array; 0 when it has none."""
    if not flat.size:
        return 0.0
    if xp is np and flat.dtype.kind in "fiu":
        # Two reductions over the stored values, no temporaries: NaN is passed
        # over; an Inf found sends the rare case to the loop below.
        high, low = float(np.fmax.reduce(flat)), float(np.fmin.reduce(flat))
        if np.isfinite(high) and np.isfinite(low):
            return max(abs(high), abs(low))
        if np.isnan(high):  # every value NaN
            return 0.0
    peak = 0.0
    for start in range(0, flat.size, step):
        chunk = xp.abs(flat[start:start + step].astype(np.float64))
        finite = chunk[xp.isfinite(chunk)]
        if finite.size:
            peak = max(peak, float(finite.max()))
    return peak


def range_judged_atol(atol: float, rtol: float, peak: float) -> tuple[float, str]:
    """(atol as applied to a blob whose largest value is `peak`, why the blob is
    too small to judge or ""). rtol 0 asks for a purely absolute judgement."""
    if peak < FLOAT32_TINY:
        what = "every value is 0" if peak == 0 else f"its largest value is {peak:.3g}"
        return atol, (f"{what}, below float32's smallest normal number {FLOAT32_TINY:.3g}: "
                      "there is no range to judge it against")
    if rtol <= 0:
        return atol, ""
    return min(atol, rtol * peak), ""


# OpenBLAS hands a dot of over 10,000 values to its threads, whose hand-over
# costs more than the sums (on a busy 2-core machine a comparison ran 5-10x
# slower in wall time); up to this many it sums on the calling thread, and
# 3x faster than NumPy's own einsum loop.
_DOT_VALUES = 8192


def _dot(x: np.ndarray, y: np.ndarray) -> float:
    """x . y in float64, in slices OpenBLAS does on the calling thread."""
    return float(sum(np.dot(x[start:start + _DOT_VALUES], y[start:start + _DOT_VALUES])
                     for start in range(0, x.size, _DOT_VALUES)))


class _Totals:
    """Running figures of a comparison, gathered chunk by chunk."""

    def __init__(self):
        self.max_abs = self.max_rel = self.sum_abs = 0.0
        self.min_atol = self.min_rtol = 0.0
        self.dot = self.norm_a = self.norm_b = 0.0
        self.failing = self.nonfinite = self.nan_mismatches = self.measured = 0
        self._scratch: dict = {}

    def _buffers(self, size: int) -> tuple:
        """Five float64 work arrays of `size` values, made once per comparison:
        a fresh temporary for each step of each chunk cost more than the
        arithmetic (verify --all-blobs of ResNet-50: most of the comparison)."""
        if size not in self._scratch:
            self._scratch[size] = tuple(np.empty(size) for _ in range(5))
        return self._scratch[size]

    def as_float64(self, xp, chunk, side: int):
        """The chunk in float64: on the CPU, in a work array of this comparison."""
        if xp is not np:
            return chunk.astype(np.float64)
        values = self._buffers(chunk.size)[3 + side]
        np.copyto(values, chunk, casting="unsafe")
        return values

    def add_identical(self, x) -> bool:
        """Add a chunk whose two sides hold the same finite values (float64):
        every difference is 0, only the norms are left to sum. False (and
        nothing added) where a value is not finite."""
        norm = _dot(x, x)
        if not np.isfinite(norm):
            return False
        self.measured += int(x.size)
        self.dot += norm
        self.norm_a += norm
        self.norm_b += norm
        return True

    def add(self, xp, x, y, atol: float, rtol: float) -> None:
        """Add one chunk of both sides (float64 arrays). Written for few
        passes over the chunk: this is most of what verify --all-blobs costs."""
        with np.errstate(invalid="ignore"):  # inf - inf: found just below
            if xp is np:
                buffer = self._buffers(x.size)[2]
                difference = np.abs(np.subtract(x, y, out=buffer), out=buffer)
            else:
                difference = xp.abs(x - y)
        total = float(difference.sum())
        # Float32 values cannot overflow a float64 sum of a chunk: a finite
        # sum means every difference, so both sides, are finite.
        if not np.isfinite(total):
            both = xp.isfinite(x) & xp.isfinite(y)
            # Non-finite positions that differ: NaN against a number, +Inf against -Inf, ...
            agree = ~both & (xp.isnan(x) & xp.isnan(y) | (x == y))
            self.nonfinite += int(both.size - int(xp.count_nonzero(both)))
            self.nan_mismatches += int(xp.count_nonzero(~both & ~agree))
            x, y = x[both], y[both]
            difference = xp.abs(x - y)
            total = float(difference.sum())
        if not x.size:
            return
        if xp is np:
            scale, work = self._buffers(x.size)[:2]
            np.abs(x, out=scale)
            np.maximum(scale, np.abs(y, out=work), out=scale)
        else:
            scale = work = xp.maximum(xp.abs(x), xp.abs(y))
        self.measured += int(x.size)
        largest = float(difference.max())
        self.max_abs = max(self.max_abs, largest)
        self.sum_abs += total
        # |a - b| - rtol * scale: above atol fails; its maximum is the atol needed
        beyond = xp.subtract(difference, xp.multiply(scale, rtol, out=work), out=work)
        needed = float(beyond.max())
        self.min_atol = max(self.min_atol, needed)
        if needed > atol:  # some fail: count them (a passing chunk skips two passes)
            self.failing += int(xp.count_nonzero(beyond > atol))
        with np.errstate(invalid="ignore", divide="ignore"):
            if xp is np:  # 0 / 0 where both values are 0: fmax passes over those NaNs
                ratio = np.fmax.reduce(np.divide(difference, scale, out=work), initial=0.0)
            else:  # CuPy: the plain form, one kernel call more
                ratio = xp.where(scale > 0, difference / xp.where(scale > 0, scale, 1.0), 0.0).max()
        self.max_rel = max(self.max_rel, float(ratio))
        if largest > atol:  # only these need a larger rtol
            over = difference > atol
            excess, room = difference[over] - atol, scale[over]
            needed = xp.where(room > 0, excess / xp.where(room > 0, room, 1.0), xp.inf)
            self.min_rtol = max(self.min_rtol, float(needed.max()))
        dot = _dot if xp is np else xp.dot
        self.dot += dot(x, y)
        self.norm_a += dot(x, x)
        self.norm_b += dot(y, y)


# Values compared at a time: float64 temporaries of a chunk stay in cache on
# the CPU; on a GPU, a few large kernel calls beat many small ones.
CHUNK_VALUES = {"cpu": 1 << 14, "gpu": 1 << 24}


def _array_module(array):
    if isinstance(array, np.ndarray) or not hasattr(array, "__cuda_array_interface__"):
        return np
    import cupy

    return cupy


def compare_arrays(name: str, a, b, atol: float = DEFAULT_ATOL,
                   rtol: float = DEFAULT_RTOL, allow_nonfinite: bool = False,
                   range_judged: bool = False) -> BlobComparison:
    """Compare two blobs element by element.

    With `range_judged`, atol is at most rtol times the blob's largest value
    (see the module's description), and a blob too small to judge says so.

    NaN and Inf are never close to anything: a blob holding them fails,
    unless `allow_nonfinite` is given and both sides hold the very same
    non-finite values in the same places (then only the finite ones are
    measured). Cosine similarity is given only when every value is finite.

    Both on the GPU: compared there, only the figures come back. Chunk by
    chunk, in float64: the memory a comparison takes does not grow with the
    blobs."""
    xp = _array_module(a)
    if xp is not _array_module(b):
        xp, a, b = np, to_host(a), to_host(b)
    if tuple(a.shape) != tuple(b.shape):
        return failed_comparison(name, a.shape, int(max(a.size, b.size)),
                         f"shapes differ: {list(a.shape)} vs {list(b.shape)}")
    flat_a, flat_b = a.reshape(-1), b.reshape(-1)
    step = CHUNK_VALUES["cpu" if xp is np else "gpu"]
    peak = max(_largest_finite(xp, flat_a, step), _largest_finite(xp, flat_b, step))
    applied, too_small = range_judged_atol(atol, rtol, peak) if range_judged else (atol, "")
    totals = _Totals()
    # Equal chunks (a file against its conversion, run by the same engine)
    # need only their norms: one pass instead of a dozen.
    spot_equal = xp is np and a.dtype == b.dtype and applied >= 0 and rtol >= 0
    for start in range(0, flat_a.size, step):
        chunk_a, chunk_b = flat_a[start:start + step], flat_b[start:start + step]
        x = totals.as_float64(xp, chunk_a, 0)
        if spot_equal and np.array_equal(chunk_a, chunk_b) and totals.add_identical(x):
            continue
        totals.add(xp, x, totals.as_float64(xp, chunk_b, 1), applied, rtol)
    cosine = None
    if not totals.nonfinite:
        norms = float(np.sqrt(totals.norm_a) * np.sqrt(totals.norm_b))
        cosine = totals.dot / norms if norms > 0 else (1.0 if not totals.max_abs else None)
    mismatched = totals.failing + totals.nan_mismatches
    problem = ""
    if totals.nan_mismatches:
        problem = f"{totals.nan_mismatches} NaN/Inf positions differ"
    elif totals.nonfinite and not allow_nonfinite:
        mismatched += totals.nonfinite
        problem = (f"{totals.nonfinite} NaN/Inf values (the same on both sides; --allow-nonfinite "
                   "accepts that)")
    return BlobComparison(
        name=name, shape=list(a.shape), passed=mismatched == 0,
        max_abs_error=totals.max_abs,
        mean_abs_error=totals.sum_abs / totals.measured if totals.measured else 0.0,
        max_rel_error=totals.max_rel, cosine_similarity=cosine,
        min_atol=totals.min_atol, min_rtol=totals.min_rtol,
        mismatched=mismatched, nan_mismatches=totals.nan_mismatches, nonfinite=totals.nonfinite,
        problem=problem, atol=atol, rtol=rtol, peak=peak, effective_atol=applied,
        too_small=too_small)
