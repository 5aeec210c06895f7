"""Checking that two models compute the same thing.

Each blob is compared element by element with a symmetric measure: an
element passes when |a - b| <= atol + rtol * max(|a|, |b|). The report also
gives max and mean absolute error, the max relative error |a - b| / max(|a|, |b|),
cosine similarity, and the smallest atol (at the given rtol) and rtol (at the
given atol) that would have passed.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np

from .engine.net import check_input_size
from .errors import BlobcastError, about
from .fileio import check_regular_file
from .limits import check_allocation

# float32 defaults. rtol 1e-3 (about 8000 float32 ulps) leaves room for the
# different summation orders of two engines in long dot products; atol 1e-5
# covers values near zero left by cancellation.
DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-3
INPUTS_KEY = "__blobcast_inputs__"


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


@dataclass
class VerifyReport:
    a: str
    b: str
    inputs: dict[str, list[int]]
    compared: list[BlobComparison] = field(default_factory=list)
    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL
    device: str = "cpu"
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    all_blobs: bool = False
    input_sources: dict[str, str] = field(default_factory=dict)  # name -> where its values came from

    @property
    def passed(self) -> bool:
        return bool(self.compared) and all(c.passed for c in self.compared)

    @property
    def problem(self) -> str:
        """Why the report fails as a whole, beyond its blobs."""
        if not self.compared:
            return ("no blob was compared: the two sides share no output"
                    + ("" if self.all_blobs else " (try --all-blobs)"))
        return ""

    @property
    def first_mismatch(self) -> BlobComparison | None:
        return next((c for c in self.compared if not c.passed), None)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["passed"] = self.passed
        out["problem"] = self.problem or None
        first = self.first_mismatch
        out["first_mismatch"] = first.name if first else None
        return out


def parse_input_spec(spec: str) -> tuple[str, np.ndarray | list[int]]:
    """NAME=d1,d2,... (a shape, filled with seeded random values) or NAME=file.npy."""
    if "=" not in spec:
        raise BlobcastError(f"--input {spec!r}: write NAME=SHAPE (e.g. data=1,3,224,224) or "
                            "NAME=file.npy")
    name, value = spec.split("=", 1)
    if value.endswith(".npy"):
        return name, read_npy(value)
    parts = [d.strip() for d in value.replace("x", ",").split(",")]
    if not all(d.isdigit() for d in parts):
        raise BlobcastError(f"--input {spec!r}: the shape must be whole numbers like 1,3,224,224 "
                            "(or 1x3x224x224)")
    shape = [int(d) for d in parts]
    if any(d <= 0 for d in shape):
        raise BlobcastError(f"--input {spec!r}: every dimension must be positive")
    return name, shape


def make_inputs(declared: dict[str, list[int] | None], given: dict, seed: int) -> dict:
    """Input arrays: given arrays as they are, shapes (given or declared) filled
    with normal(0, 1) float32 values from a seeded generator, in input order."""
    rng = np.random.RandomState(seed)
    inputs = {}
    for name in declared:
        value = given.get(name, declared[name])
        if value is None:
            raise BlobcastError(f"the net input {name!r} has no declared shape; give one with "
                                f"--input {name}=SHAPE or --input {name}=file.npy")
        if isinstance(value, np.ndarray):
            inputs[name] = value
        else:
            check_input_size(name, value)
            inputs[name] = rng.standard_normal(tuple(value)).astype(np.float32)
    unknown = set(given) - set(declared)
    if unknown:
        raise BlobcastError("the net has no input named " + ", ".join(sorted(unknown)))
    return inputs


MAX_NPZ_ENTRIES = 100_000


def _npy_header(handle, where: str, path: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, bytes of values) from a .npy header, nothing else read."""
    try:
        version = np.lib.format.read_magic(handle)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, _, dtype = read_header(handle)
    except (ValueError, OSError, SyntaxError) as error:
        raise BlobcastError(f"{where}: not a readable .npy array ({error})", path) from error
    if dtype.hasobject:
        raise BlobcastError(f"{where}: holds Python objects; refused", path)
    count = 1
    for d in shape:
        count *= int(d)
    return tuple(shape), dtype, count * dtype.itemsize


def read_npy(path: str) -> np.ndarray:
    """A .npy file, its header checked against the file's size and the memory
    budget before the values are read."""
    check_regular_file(path, BlobcastError)
    with open(path, "rb") as handle:
        shape, _, nbytes = _npy_header(handle, "the array", path)
        available = os.fstat(handle.fileno()).st_size - handle.tell()
    if nbytes > available:
        raise BlobcastError(f"the header declares {nbytes} bytes of values but the file holds "
                            f"{available}", path)
    check_allocation(nbytes, "the array", path)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise BlobcastError(f"not a readable .npy file ({error})", path) from error


def _check_npz(path: str) -> None:
    """Every member's declared size, from the zip directory and each .npy
    header, within the file's bounds and the memory budget: no zip bomb."""
    import zipfile

    check_regular_file(path, BlobcastError)
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if len(members) > MAX_NPZ_ENTRIES:
                raise BlobcastError(f"holds {len(members)} entries; at most {MAX_NPZ_ENTRIES} "
                                    "are read", path)
            total = 0
            for member in members:
                with archive.open(member) as handle:
                    _, _, nbytes = _npy_header(handle, member.filename, path)
                if nbytes > member.file_size:
                    raise BlobcastError(f"{member.filename}: the header declares {nbytes} bytes "
                                        f"but the entry holds {member.file_size}", path)
                total += member.file_size
            check_allocation(total, "the recorded blobs", path)
    except zipfile.BadZipFile as error:
        raise BlobcastError(f"not a readable .npz file ({error})", path) from error


def load_reference(path: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """Blobs recorded by `blobcast run --save` (or any .npz keyed by blob name),
    and the names of the inputs among them."""
    _check_npz(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            blobs = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError) as error:
        raise BlobcastError(f"not a readable .npz file ({error})", path) from error
    inputs = [str(n) for n in blobs.pop(INPUTS_KEY, np.array([], dtype=str))]
    return blobs, inputs


def save_blobs(path: str, inputs: dict, blobs: dict) -> None:
    arrays = {name: _to_host(value) for name, value in blobs.items()}
    arrays.update({name: _to_host(value) for name, value in inputs.items()})
    arrays[INPUTS_KEY] = np.array(list(inputs), dtype=str)
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


@dataclass
class RunOptions:
    prototxt: str | None = None
    inputs: tuple[str, ...] = ()
    seed: int = 0
    all_blobs: bool = False
    device: str = "cpu"
    allow_python_layers: bool = False
    python_path: tuple[str, ...] = ()
    random_weights: bool = False  # layers without weights get seeded ones (Caffe's fillers)


def _load_model(path: str, prototxt: str | None):
    from .api import load
    from .model import Model

    needs_weights_pairing = not path.lower().endswith((".prototxt", ".pbtxt"))
    model = load(path, prototxt=prototxt if needs_weights_pairing else None)
    if not isinstance(model, Model):
        raise BlobcastError("a solver state holds no net to run; give its weights file", path)
    if not model.has_architecture:
        raise BlobcastError("holds weights but no layer definitions; give --prototxt", path)
    return model


def _net(model, options: RunOptions):
    from .engine import Net

    return Net(model, device=options.device, allow_python_layers=options.allow_python_layers,
               python_path=options.python_path,
               random_weights=options.seed if options.random_weights else None)


def _side(path: str, options: RunOptions):
    """What runs a file: the ONNX runner for .onnx, else the engine."""
    if path.lower().endswith(".onnx"):
        from .api import _converters

        return _converters().onnx_format.OnnxRunner(path)
    return _net(_load_model(path, options.prototxt), options)


def _notes(side, prefix: str = "") -> list[str]:
    return [f"{prefix}{s.name} ({s.type}): {s.reason}" for s in getattr(side, "skipped", [])]


def _given_inputs(options: RunOptions) -> dict:
    return dict(parse_input_spec(spec) for spec in options.inputs)


def run_model(path: str, options: RunOptions) -> tuple[dict, dict, list[str]]:
    """Run one model: (inputs, blobs, notes). Blobs are its outputs, or every
    blob with all_blobs, as NumPy arrays."""
    given = _given_inputs(options)
    with about(path):
        net = _side(path, options)
        inputs = make_inputs(net.inputs, given, options.seed)
        blobs = net.forward(inputs, keep_all=options.all_blobs)
    notes = _notes(net)
    return inputs, {name: _to_host(value) for name, value in blobs.items()
                    if name not in inputs}, notes


def _compare_runs(a_blobs: dict, b_blobs: dict, order: list[str], atol, rtol,
                  allow_nonfinite: bool) -> list:
    results = []
    for name in order:
        if name not in b_blobs:
            results.append(_mismatch(name, np.shape(a_blobs[name]), int(np.size(a_blobs[name])),
                                     "missing from the other side"))
            continue
        results.append(compare_arrays(name, a_blobs[name], b_blobs[name], atol, rtol,
                                      allow_nonfinite))
    return results


def verify_files(a: str, b: str, options: RunOptions, *, atol: float = DEFAULT_ATOL,
                 rtol: float = DEFAULT_RTOL, allow_nonfinite: bool = False) -> VerifyReport:
    """Run A and B on the same inputs and compare their blobs; B may be an .npz
    of blobs recorded earlier (its inputs are used unless options.inputs override)."""
    import time

    started = time.perf_counter()
    given = _given_inputs(options)
    with about(a):
        net_a = _side(a, options)
    notes = _notes(net_a)
    sources = {name: "--input" for name in given}
    if b.lower().endswith(".npz"):
        reference, reference_inputs = load_reference(b)
        if not reference_inputs:
            # Written by another tool: the net's inputs are the entries named like them.
            reference_inputs = [name for name in net_a.inputs if name in reference]
        for name in reference_inputs:
            if name in net_a.inputs and name not in given:
                given[name] = reference[name]
                sources[name] = os.path.basename(b)
        b_blobs = {k: v for k, v in reference.items() if k not in reference_inputs}
        with about(a):
            inputs = make_inputs(net_a.inputs, given, options.seed)
            a_blobs = net_a.forward(inputs, keep_all=options.all_blobs)
        if options.all_blobs:
            order = [name for name in a_blobs if name in b_blobs and name not in inputs]
        else:
            order = [name for name in net_a.outputs if name not in inputs]
            missing = [name for name in order if name not in b_blobs]
            if missing:
                raise BlobcastError("the recorded blobs lack the outputs "
                                    + ", ".join(missing), b)
    else:
        with about(b):
            net_b = _side(b, options)
        notes += _notes(net_b, "B: ")
        if list(net_a.inputs) != list(net_b.inputs):
            raise BlobcastError(f"the two nets take different inputs: {list(net_a.inputs)} and "
                                f"{list(net_b.inputs)}")
        with about(a):
            inputs = make_inputs(net_a.inputs, given, options.seed)
            a_blobs = net_a.forward(inputs, keep_all=options.all_blobs)
        with about(b):
            b_blobs = net_b.forward(inputs, keep_all=options.all_blobs)
        if options.all_blobs:
            order = [name for name in a_blobs if name in b_blobs and name not in inputs]
        else:
            order = [name for name in net_a.outputs if name not in inputs]
    for name in inputs:
        sources.setdefault(name, f"random normal(0, 1), seed {options.seed}")
    notes = [f"input {name!r} {list(np.shape(inputs[name]))}: {where}"
             for name, where in sources.items() if name in inputs] + notes
    report = VerifyReport(a, b, {name: list(np.shape(v)) for name, v in inputs.items()},
                          _compare_runs(a_blobs, b_blobs, order, atol, rtol, allow_nonfinite),
                          atol, rtol, "gpu" if getattr(net_a, "xp", np) is not np else "cpu",
                          notes=notes, all_blobs=options.all_blobs,
                          input_sources={k: v for k, v in sources.items() if k in inputs})
    report.seconds = time.perf_counter() - started
    return report
