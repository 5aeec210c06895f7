"""Checking that two models compute the same thing: `verify` and `run`
(blob comparison itself is in compare.py, inputs in inputs.py, the two runs
in forward.py's run_pair)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import BlobcastError, about
from ..io import converters, load
from .compare import DEFAULT_ATOL, DEFAULT_RTOL, BlobComparison, compare_arrays, failed_comparison, to_host
from .forward import run_pair
from .inputs import RECORDED_INPUTS, check_npz, parse_input_spec, runner_inputs
from .rounding import check_rounding
from .runner import Runner, forward_what_runs, skipped_notes, uncomputed_notes
from .sides import runner_for

INPUTS_KEY = RECORDED_INPUTS


@dataclass(frozen=True)
class Tolerances:
    """How close two blobs must be. atol and rtol apply to every blob, judged
    relative to its range (compare.py); `per_blob` (name -> (atol, rtol))
    overrides them for the blobs it names, taken as given."""

    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL
    per_blob: dict = field(default_factory=dict)

    def compare(self, name: str, a, b, allow_nonfinite: bool) -> BlobComparison:
        if name in self.per_blob:
            atol, rtol = self.per_blob[name]
            return compare_arrays(name, a, b, atol, rtol, allow_nonfinite)
        return compare_arrays(name, a, b, self.atol, self.rtol, allow_nonfinite, range_judged=True)


def parse_tolerance(spec: str) -> tuple[str, tuple[float, float]]:
    """BLOB=ATOL,RTOL (as --tolerance takes it) -> (blob, (atol, rtol))."""
    name, _, values = spec.rpartition("=")
    parts = values.split(",")
    try:
        atol, rtol = (float(part) for part in parts) if len(parts) == 2 else (None, None)
    except ValueError:
        atol = rtol = None
    if not name or atol is None or not all(np.isfinite(x) and x >= 0 for x in (atol, rtol)):
        raise BlobcastError(f"--tolerance {spec!r}: expected BLOB=ATOL,RTOL with two numbers "
                            "of 0 or more, e.g. prob=1e-6,1e-3")
    return name, (atol, rtol)


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
    tolerances: dict[str, list[float]] = field(default_factory=dict)  # per blob: [atol, rtol]

    @property
    def too_small(self) -> list[str]:
        """The blobs whose values are too small to judge."""
        return [c.name for c in self.compared if c.too_small]

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

    def explanations(self) -> list[str]:
        """A line for each blob too small to judge, and for each float64 check."""
        lines = [f"{c.name}: too small to judge: {c.too_small}" for c in self.compared if c.too_small]
        return lines + [f"{c.name}: {c.rounding.verdict}" for c in self.compared if c.rounding]

    def tolerance_text(self) -> str:
        text = f"atol {self.atol:g}, rtol {self.rtol:g} of each blob's range"
        if self.tolerances:
            text += " (" + "; ".join(f"{name}: atol {pair[0]:g}, rtol {pair[1]:g}"
                                     for name, pair in self.tolerances.items()) + ")"
        if self.too_small:
            text += f"; {len(self.too_small)} too small to judge"
        return text

    @property
    def first_mismatch(self) -> BlobComparison | None:
        return next((c for c in self.compared if not c.passed), None)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["passed"] = self.passed
        out["problem"] = self.problem or None
        first = self.first_mismatch
        out["first_mismatch"] = first.name if first else None
        out["too_small"] = self.too_small
        return out


def load_reference(path: str) -> tuple[dict[str, np.ndarray], list[str]]:
    """Blobs recorded by `blobcast run --save` (or any .npz keyed by blob name),
    and the names of the inputs among them."""
    check_npz(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            blobs = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError) as error:
        raise BlobcastError(f"not a readable .npz file ({error})", path) from error
    inputs = [str(n) for n in np.atleast_1d(blobs.pop(INPUTS_KEY, np.array([], dtype=str)))]
    absent = [name for name in inputs if name not in blobs]
    if absent:
        raise BlobcastError(f"{INPUTS_KEY} lists the input(s) {', '.join(map(repr, absent))}, "
                            "but the file holds no array of that name", path)
    return blobs, inputs


def save_blobs(path: str, inputs: dict, blobs: dict) -> None:
    arrays = {name: to_host(value) for name, value in blobs.items()}
    arrays.update({name: to_host(value) for name, value in inputs.items()})
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
    layer_plugins: tuple[str, ...] = ()  # Python files registering layer types (--layer-plugin)
    winograd: bool = True  # the engine's Winograd 3x3 convolutions (--no-winograd: off)
    precision: str | None = None  # the engine's arithmetic, e.g. f8 (--precision)


def _load_model(path: str, prototxt: str | None):
    from ..model import Model

    needs_weights_pairing = not path.lower().endswith((".prototxt", ".pbtxt"))
    model = load(path, prototxt=prototxt if needs_weights_pairing else None)
    if not isinstance(model, Model):
        raise BlobcastError("a solver state holds no net to run; give its weights file", path)
    if not model.has_architecture:
        raise BlobcastError("holds weights but no layer definitions; give --prototxt", path)
    return model


def _is_onnx(path: str) -> bool:
    return not path.lower().endswith(".npz") and converters().detect_format(path).runs_by_itself


def _side(path: str, options: RunOptions, engine_elsewhere: bool = False) -> Runner:
    """What runs a file: the ONNX runner for .onnx, else the engine. The
    engine's options given for an ONNX file are refused, unless the other
    side of a comparison is run by the engine (they are for that side)."""
    from ..engine.plugins import load_layer_plugin

    for plugin in options.layer_plugins:
        load_layer_plugin(plugin)
    engine_options = dict(allow_python_layers=options.allow_python_layers,
                          python_path=options.python_path,
                          random_weights=options.seed if options.random_weights else None,
                          winograd=options.winograd, precision=options.precision)
    if _is_onnx(path):  # its own runtime runs it
        refused = {} if engine_elsewhere else dict(prototxt=options.prototxt,
                                                   layer_plugins=options.layer_plugins,
                                                   **engine_options)
        return runner_for(path, device=options.device, **refused)
    return runner_for(_load_model(path, options.prototxt), device=options.device,
                      skip_unrunnable=True, **engine_options)


def _given_inputs(options: RunOptions) -> dict:
    return dict(parse_input_spec(spec) for spec in options.inputs)


def run_model(path: str, options: RunOptions) -> tuple[dict, dict, list[str]]:
    """Run one model: (inputs, blobs, notes). Blobs are its outputs, or every
    blob with all_blobs, as NumPy arrays."""
    given = _given_inputs(options)
    with about(path):
        net = _side(path, options)
        inputs = runner_inputs(net, given, options.seed)
        blobs = forward_what_runs(net, inputs, options.all_blobs)
    notes = skipped_notes(net) + uncomputed_notes(net)
    return inputs, {name: to_host(value) for name, value in blobs.items()
                    if name not in inputs}, notes


def _compare_runs(a_blobs: dict, b_blobs: dict, order: list[str], tolerances: Tolerances,
                  allow_nonfinite: bool) -> list:
    results = []
    for name in order:
        if name not in b_blobs:
            results.append(failed_comparison(name, np.shape(a_blobs[name]), int(np.size(a_blobs[name])),
                                     "missing from the other side"))
            continue
        results.append(tolerances.compare(name, a_blobs[name], b_blobs[name], allow_nonfinite))
    return results


def _against_recording(net_a, b: str, given: dict, sources: dict, options: RunOptions):
    """A run against blobs recorded in the .npz b: (inputs, A's blobs, B's, names to compare)."""
    reference, reference_inputs = load_reference(b)
    if not reference_inputs:
        # Written by another tool: the net's inputs are the entries named like them.
        reference_inputs = [name for name in net_a.inputs if name in reference]
    for name in reference_inputs:
        if name in net_a.inputs and name not in given:
            given[name] = reference[name]
            sources[name] = os.path.basename(b)
    b_blobs = {k: v for k, v in reference.items() if k not in reference_inputs}
    inputs = runner_inputs(net_a, given, options.seed)
    a_blobs = forward_what_runs(net_a, inputs, options.all_blobs)
    if options.all_blobs:
        return inputs, a_blobs, b_blobs, [name for name in a_blobs
                                           if name in b_blobs and name not in inputs]
    order = [name for name in net_a.outputs if name not in inputs and name in a_blobs]
    missing = [name for name in order if name not in b_blobs]
    if missing:
        raise BlobcastError("the recorded blobs lack the outputs " + ", ".join(missing), b)
    return inputs, a_blobs, b_blobs, order


def _check_tolerance_names(tolerances: Tolerances, results: list) -> None:
    compared = {c.name for c in results}
    unknown = [name for name in tolerances.per_blob if name not in compared]
    if unknown:
        raise BlobcastError(f"--tolerance names {', '.join(map(repr, unknown))}, which "
                            f"{'is' if len(unknown) == 1 else 'are'} not compared (compared: "
                            f"{', '.join(sorted(compared)) or 'nothing'})")


def verify_files(a: str, b: str, options: RunOptions, *, atol: float = DEFAULT_ATOL,
                 rtol: float = DEFAULT_RTOL, allow_nonfinite: bool = False,
                 tolerances: dict | None = None, explain: bool = True) -> VerifyReport:
    """Run A and B on the same inputs and compare their blobs; B may be an .npz
    of blobs recorded earlier (its inputs are used unless options.inputs override).

    Each blob must be within atol and rtol, judged relative to its own range;
    `tolerances` (blob name -> (atol, rtol)) sets them for the blobs it names.
    With `explain`, blobs that differ are measured against a float64 run of
    the engine: each one's `rounding` says whether both sides are within
    float32 rounding of it, and which side strays."""
    import time

    started = time.perf_counter()
    judge = Tolerances(atol, rtol, {name: tuple(map(float, pair))
                                    for name, pair in (tolerances or {}).items()})
    given = _given_inputs(options)
    with about(a):
        net_a = _side(a, options, engine_elsewhere=not b.lower().endswith(".npz") and not _is_onnx(b))
    notes = skipped_notes(net_a) + uncomputed_notes(net_a)
    sources = {name: "--input" for name in given}
    results, net_b, b_blobs = None, None, {}
    if b.lower().endswith(".npz"):
        with about(a):
            inputs, a_blobs, b_blobs, order = _against_recording(net_a, b, given, sources, options)
    else:
        with about(b):
            net_b = _side(b, options, engine_elsewhere=not _is_onnx(a))
        notes += skipped_notes(net_b, "B: ") + uncomputed_notes(net_b, "B: ")
        if list(net_a.inputs) != list(net_b.inputs):
            raise BlobcastError(f"the two nets take different inputs: {list(net_a.inputs)} and "
                                f"{list(net_b.inputs)}")
        with about(a):
            inputs = runner_inputs(net_a, given, options.seed)
        run = run_pair(net_a, net_b, inputs, options.all_blobs, paths=(a, b),
                       judge=lambda name, x, y: judge.compare(name, x, y, allow_nonfinite))
        a_blobs, b_blobs = run.a, run.b
        if run.compared is not None:
            order = run.order
            results = [run.compared[name] for name in order]
        elif options.all_blobs:
            order = [name for name in a_blobs if name in b_blobs and name not in inputs]
        else:
            order = [name for name in net_a.outputs if name not in inputs and name in a_blobs
                     and name not in net_b.uncomputed]
    if results is None:
        results = _compare_runs(a_blobs, b_blobs, order, judge, allow_nonfinite)
    _check_tolerance_names(judge, results)
    failed = [c for c in results if not c.passed]
    if failed and explain:
        notes += check_rounding(failed, (net_a, net_b), inputs, a_blobs, b_blobs)
    for name in inputs:
        sources.setdefault(name, f"random normal(0, 1), seed {options.seed}")
    notes = [f"input {name!r} {list(np.shape(inputs[name]))}: {where}"
             for name, where in sources.items() if name in inputs] + notes
    report = VerifyReport(a, b, {name: list(np.shape(v)) for name, v in inputs.items()},
                          results,
                          atol, rtol, net_a.device,
                          notes=notes, all_blobs=options.all_blobs,
                          input_sources={k: v for k, v in sources.items() if k in inputs},
                          tolerances={k: list(v) for k, v in judge.per_blob.items()})
    report.seconds = time.perf_counter() - started
    return report
