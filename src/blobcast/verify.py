"""Checking that two models compute the same thing: `verify` and `run`
(blob comparison itself is in compare.py, inputs in inputs.py)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np

from .api import _converters, load
from .compare import (  # noqa: F401  (part of this module's interface)
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    BlobComparison,
    _mismatch,
    _to_host,
    compare_arrays,
)
from .engine import Net
from .errors import BlobcastError, about
from .inputs import _check_npz, make_inputs, parse_input_spec, read_npy  # noqa: F401
from .runners import forward_what_runs, runner_for

INPUTS_KEY = "__blobcast_inputs__"


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
    layer_plugins: tuple[str, ...] = ()  # Python files registering layer types (--layer-plugin)
    winograd: bool = False  # the engine's opt-in fast 3x3 convolutions (--winograd)


def _load_model(path: str, prototxt: str | None):
    from .model import Model

    needs_weights_pairing = not path.lower().endswith((".prototxt", ".pbtxt"))
    model = load(path, prototxt=prototxt if needs_weights_pairing else None)
    if not isinstance(model, Model):
        raise BlobcastError("a solver state holds no net to run; give its weights file", path)
    if not model.has_architecture:
        raise BlobcastError("holds weights but no layer definitions; give --prototxt", path)
    return model


def _side(path: str, options: RunOptions):
    """What runs a file: the ONNX runner for .onnx, else the engine."""
    from .engine.plugins import load_layer_plugin

    for plugin in options.layer_plugins:
        load_layer_plugin(plugin)
    if "graph" in _converters().detect_format(path).holds:  # ONNX: its own runtime runs it
        return runner_for(path)
    return runner_for(_load_model(path, options.prototxt), device=options.device,
                      allow_python_layers=options.allow_python_layers, skip_unrunnable=True,
                      python_path=options.python_path,
                      random_weights=options.seed if options.random_weights else None,
                      winograd=options.winograd)


def _notes(side, prefix: str = "") -> list[str]:
    return [f"{prefix}{s.name} ({s.type}): {s.reason}" for s in getattr(side, "skipped", [])]


def _uncomputed_notes(side, prefix: str = "") -> list[str]:
    missing = getattr(side, "uncomputed", None) or {}
    onnx_side = hasattr(side, "engine")  # the ONNX runner names its runtime
    what = (f"node {{}}, which {side.engine} cannot run" if onnx_side else
            "layer {}, which the engine cannot run")
    return [f"{prefix}output {name!r} not computed: it needs {what.format(cause)}"
            for name, cause in missing.items()]


def _given_inputs(options: RunOptions) -> dict:
    return dict(parse_input_spec(spec) for spec in options.inputs)


def run_model(path: str, options: RunOptions) -> tuple[dict, dict, list[str]]:
    """Run one model: (inputs, blobs, notes). Blobs are its outputs, or every
    blob with all_blobs, as NumPy arrays."""
    given = _given_inputs(options)
    with about(path):
        net = _side(path, options)
        inputs = make_inputs(net.inputs, given, options.seed,
                             unknown=getattr(net, "shape_unknown", None))
        blobs = forward_what_runs(net, inputs, options.all_blobs)
    notes = _notes(net) + _uncomputed_notes(net)
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


def _compare_as_produced(net, inputs: dict, a_blobs: dict, atol, rtol,
                         allow_nonfinite: bool) -> dict:
    """Run the engine net B and compare each blob with A's as soon as its last
    version is made, then let it go: B's blobs are never all held at once,
    and each is compared while it is still in the cache."""
    compared = {}

    def compare(name, value):
        if name in a_blobs and name not in inputs:
            compared[name] = compare_arrays(name, a_blobs[name], value, atol, rtol, allow_nonfinite)

    net.forward(inputs, on_blob=compare, final_only=True)
    return compared


def verify_files(a: str, b: str, options: RunOptions, *, atol: float = DEFAULT_ATOL,
                 rtol: float = DEFAULT_RTOL, allow_nonfinite: bool = False) -> VerifyReport:
    """Run A and B on the same inputs and compare their blobs; B may be an .npz
    of blobs recorded earlier (its inputs are used unless options.inputs override)."""
    import time

    started = time.perf_counter()
    given = _given_inputs(options)
    with about(a):
        net_a = _side(a, options)
    notes = _notes(net_a) + _uncomputed_notes(net_a)
    sources = {name: "--input" for name in given}
    results = None
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
            inputs = make_inputs(net_a.inputs, given, options.seed,
                                 unknown=getattr(net_a, "shape_unknown", None))
            a_blobs = forward_what_runs(net_a, inputs, options.all_blobs)
        if options.all_blobs:
            order = [name for name in a_blobs if name in b_blobs and name not in inputs]
        else:
            order = [name for name in net_a.outputs if name not in inputs and name in a_blobs]
            missing = [name for name in order if name not in b_blobs]
            if missing:
                raise BlobcastError("the recorded blobs lack the outputs "
                                    + ", ".join(missing), b)
    else:
        with about(b):
            net_b = _side(b, options)
        notes += _notes(net_b, "B: ") + _uncomputed_notes(net_b, "B: ")
        if list(net_a.inputs) != list(net_b.inputs):
            raise BlobcastError(f"the two nets take different inputs: {list(net_a.inputs)} and "
                                f"{list(net_b.inputs)}")
        with about(a):
            inputs = make_inputs(net_a.inputs, given, options.seed,
                                 unknown=getattr(net_a, "shape_unknown", None))
            a_blobs = forward_what_runs(net_a, inputs, options.all_blobs)
        if options.all_blobs and isinstance(net_b, Net) and not net_b.uncomputed:
            with about(b):
                compared = _compare_as_produced(net_b, inputs, a_blobs, atol, rtol, allow_nonfinite)
            order = [name for name in a_blobs if name in compared]
            results = [compared[name] for name in order]
        else:
            with about(b):
                b_blobs = forward_what_runs(net_b, inputs, options.all_blobs)
            if options.all_blobs:
                order = [name for name in a_blobs if name in b_blobs and name not in inputs]
            else:
                order = [name for name in net_a.outputs if name not in inputs and name in a_blobs
                         and name not in net_b.uncomputed]
    if results is None:
        results = _compare_runs(a_blobs, b_blobs, order, atol, rtol, allow_nonfinite)
    for name in inputs:
        sources.setdefault(name, f"random normal(0, 1), seed {options.seed}")
    notes = [f"input {name!r} {list(np.shape(inputs[name]))}: {where}"
             for name, where in sources.items() if name in inputs] + notes
    report = VerifyReport(a, b, {name: list(np.shape(v)) for name, v in inputs.items()},
                          results,
                          atol, rtol, "gpu" if getattr(net_a, "xp", np) is not np else "cpu",
                          notes=notes, all_blobs=options.all_blobs,
                          input_sources={k: v for k, v in sources.items() if k in inputs})
    report.seconds = time.perf_counter() - started
    return report
