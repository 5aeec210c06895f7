"""The public functions: load, save, convert."""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field

from .check.compare import model_differences, state_differences
from .check.forward import ForwardCheck, check_forward, check_in_opencv
from .errors import BlobcastError, BlobcastNote, BlobcastWarning, CheckFailed, FormatError, about
from .fileio import OutputGroup, atomic_destination, check_apart, check_distinct, check_stop
from .model import Model
from .solver import SolverState
from .stopping import uninterruptible
from .weights import WeightSource, attach_weights


def _converters():
    from . import converters  # file-format code lives apart from the model

    return converters


def _reading(path: str, action):
    """Run a reader; turn any failure into a one-line FormatError naming the file."""
    try:
        return action()
    except BlobcastError:
        raise
    except MemoryError as error:
        raise FormatError("not enough memory to read it", path) from error
    except (OSError, ValueError, KeyError, TypeError, IndexError, OverflowError,
            RuntimeError, UnicodeError) as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise FormatError(f"cannot be read: {detail}", path) from error


def load(path: str | os.PathLike, prototxt: str | os.PathLike | None = None,
         format: str | None = None) -> Model | SolverState:
    """Read a model (or solver state) from any supported file.

    With `prototxt`, the layers come from that net definition and the weights
    from `path`, matched by layer name as Caffe does.
    """
    path = os.fspath(path)
    converters = _converters()
    fmt = converters.detect_format(path, format)
    if prototxt is None:
        return _reading(path, lambda: fmt.read(path))
    prototxt = os.fspath(prototxt)
    arch_format = converters.detect_format(prototxt)
    if arch_format.holds != {"architecture"}:
        raise FormatError("--prototxt takes a .prototxt net definition", prototxt)
    architecture = _reading(prototxt, lambda: arch_format.read(prototxt))
    if fmt.name == "caffemodel-h5":
        return _reading(path, lambda: fmt.read(path, architecture=architecture))
    if fmt.name not in ("caffemodel", "prototxt"):
        raise FormatError(f"--prototxt goes with a weights file, not {fmt.description}", path)
    weights = _reading(path, lambda: fmt.read(path))
    sources = [WeightSource(layer.name, dict(enumerate(layer.blobs))) for layer in weights.layers]
    _reading(path, lambda: attach_weights(architecture, sources, weights_path=path,
                                          absent_shared_ok=False))
    architecture.source_format = fmt.name
    architecture.source_version = weights.source_version
    return architecture


def _check_kind(obj, fmt, path: str) -> None:
    is_state = isinstance(obj, SolverState)
    if is_state and "solver_state" not in fmt.holds:
        raise FormatError(f"a solver state cannot be written as {fmt.description}; use "
                          ".solverstate or .solverstate.h5", path)
    if not is_state and "solver_state" in fmt.holds:
        raise FormatError(f"a model cannot be written as {fmt.description}", path)


def save(obj: Model | SolverState, path: str | os.PathLike, format: str | None = None, *,
         compress: str | None = None, progress=None, **options) -> None:
    """Write a model or solver state; the format comes from the suffix unless given.

    ONNX takes options: opset, input_shapes {name: shape}, dynamic_batch,
    external_data (None: automatic above 2 GB), strict and given_shapes
    {blob: shape} (the tops of layers whose shapes blobcast cannot tell).
    """
    path = os.fspath(path)
    fmt = _converters().output_format(path, format)
    _check_kind(obj, fmt, path)
    try:
        fmt.write(obj, path, compress=compress, progress=progress, **options)
    except BlobcastError:
        raise
    except OSError as error:
        raise FormatError(f"cannot be written: {error.strerror or error}", path) from error


@dataclass
class ConversionReport:
    source: str
    destination: str
    source_format: str
    destination_format: str
    layers: int = 0
    tensors: int = 0
    bytes: int = 0
    seconds: float = 0.0
    check: str = ""
    # The forward check: {"outputs": n, "max_abs_error": e, "passed": True}, or None
    # when it did not run (see notes for why).
    forward: dict | None = None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    weights: ConversionReport | None = None

    def to_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "weights"}
        out["weights"] = self.weights.to_dict() if self.weights else None
        return out


def _verify_written(obj, temporary: str, fmt, prototxt: str | None):
    """(check text, the written model as read back)."""
    written = _reading(temporary, lambda: fmt.read(temporary))
    if isinstance(obj, SolverState):
        problems = state_differences(obj, written)
    else:
        problems = model_differences(
            obj, written, architecture="architecture" in fmt.holds,
            tensors="weights" in fmt.holds, diffs="diffs" in fmt.holds)
    if problems:
        raise CheckFailed("the written file does not read back the same: "
                          + "; ".join(problems))
    return ("bit-exact" if fmt.holds & {"weights", "solver_state"} else "architecture identical"), written


def _beside(destination: str, suffix: str) -> str:
    stem = destination[: -len(".caffemodel")] if destination.endswith(".caffemodel") else destination
    return stem + suffix


def _outputs_of(destination: str, weights: str | None, src_fmt, dst_fmt) -> list:
    """Every file a conversion may write (--weights is read, not written,
    when a solver state becomes ONNX)."""
    outputs = [destination]
    if weights is not None and not ("solver_state" in src_fmt.holds and "graph" in dst_fmt.holds):
        outputs.append(weights)
    if "graph" in src_fmt.holds and dst_fmt.name == "caffemodel":
        outputs.append(_beside(destination, ".prototxt"))
    return outputs


def _write_beside(model: Model, destination: str, suffix: str, overwrite: bool,
                  group: OutputGroup) -> None:
    try:
        with atomic_destination(_beside(destination, suffix), overwrite=overwrite, group=group) as temporary:
            save(model, temporary, format="prototxt")
    except FormatError as error:  # a setting with no text form: the weights file still holds it all
        warnings.warn(f"{_beside(destination, suffix)} not written: {error.problem}", BlobcastWarning,
                      stacklevel=2)


def _with_training(state: SolverState, weights: str | None, prototxt: str | None,
                   solver: str | None, source: str) -> Model:
    """The training net with its weights, carrying the state and its solver."""
    from .training import Training

    if solver is None:
        raise BlobcastError("a training step needs the solver's settings: give the solver "
                            "with --solver solver.prototxt")
    weights = weights if weights is not None else state.require_weights()
    check_distinct(source, weights)
    converters = _converters()
    model = load(weights, prototxt=prototxt, format=converters.weights_format(weights))
    settings = _reading(solver, lambda: converters.prototxt.read_solver(solver))
    model.training = Training(settings, state)
    with about(source):
        model.training.check(model, source)
    return model


def training_step(path: str | os.PathLike, gradients: dict) -> dict:
    """One step of the training info of an ONNX model blobcast wrote, run by
    blobcast's NumPy executor from the given gradients (by parameter value
    name, e.g. "conv1/param0"): {state name: new value} for every binding
    (each parameter, its history, solver.iter, solver.current_step)."""
    path = os.fspath(path)
    converters = _converters()
    if converters.detect_format(path).name != "onnx":
        raise FormatError("a training step runs from an .onnx model", path)
    onnx_format = converters.detect_format(path).module
    return _reading(path, lambda: onnx_format.run_training_step(path, gradients))


def modularize(source: str | os.PathLike, destination: str | os.PathLike, *,
               prototxt: str | None = None, overwrite: bool = False) -> dict:
    """Write the modular form of a flat net: its repeated blocks found and
    written once as modules, each occurrence an instance. The text is
    flattened again and must give the same layers and settings before it is
    written. Returns what was found."""
    from .check.compare import model_differences
    from .module_discovery import discover_modules

    source, destination = os.fspath(source), os.fspath(destination)
    check_apart([source, prototxt], [destination])
    model = load(source, prototxt=prototxt)
    if not isinstance(model, Model) or not model.has_architecture:
        raise FormatError("modularize needs a net with its layer definitions (give --prototxt "
                          "with a weights file)", source)
    if model.modules:
        raise BlobcastError("the net is already written with modules", source)
    found = discover_modules(model)
    converters = _converters()
    from .converters.modular_writer import modular_text

    text = modular_text(model, found)
    back = converters.prototxt.flatten_modular(text, destination)
    problems = model_differences(model, back, tensors=False)
    if problems:
        raise CheckFailed("the modular form does not flatten back to the net: " + "; ".join(problems[:3]))
    with atomic_destination(destination, overwrite=overwrite) as temporary:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
    return {"source": source, "destination": destination,
            "modules": [{"module": m.name, "instances": m.instance_names, "params": list(m.params),
                         "layers": len(m.regions[0].layers)} for m in found],
            "layers": len(model.layers),
            "lines": {"flat": len(converters.prototxt.architecture_text(model).splitlines()),
                      "modular": len(text.splitlines())}}


def _check_training_read_back(model: Model, temporary: str, fmt) -> str:
    """The written training snapshot reads back to the same weights and state."""
    written = _reading(temporary, lambda: fmt.read(temporary))
    problems = state_differences(model.training.state, written.training.state)
    problems += model_differences(model, written, architecture=True)
    if problems:
        raise CheckFailed("the training state read back from the written model differs: "
                          + "; ".join(problems[:5]))
    return "training state read back bit-exact"


def _write_weights(model: Model, path: str, overwrite: bool, group: OutputGroup) -> ConversionReport:
    """The weights of a model that carried its training, beside the restored state."""
    started = time.perf_counter()
    converters = _converters()
    fmt = converters.output_format(path, None)
    if "weights" not in fmt.holds or "solver_state" in fmt.holds:
        raise FormatError("--weights takes a .caffemodel or .caffemodel.h5", path)
    with atomic_destination(path, overwrite=overwrite, group=group) as temporary:
        save(model, temporary, format=fmt.name)
        check, _ = _verify_written(model, temporary, fmt, None)
    report = ConversionReport(model.training.state.source_path, path, "onnx", fmt.name, check=check,
                              layers=len(model.layers), tensors=len(model.owned_params()),
                              bytes=model.nbytes)
    report.seconds = time.perf_counter() - started
    return report


def _plain_relative(folder: str) -> bool:
    """A relative folder without '..' parts: all of a recorded path that may travel."""
    return not os.path.isabs(folder) and ".." not in folder.replace("\\", "/").split("/")


def _learned_net_for(old_learned_net: str, new_weights: str, destination: str) -> str:
    """The learned_net to record in a converted state so Caffe still finds it.

    The old value comes from the (untrusted) state file: only a plain relative
    folder of it is kept, never an absolute path or a '..' escape, so the new
    state points only where the user said."""
    same_folder = (os.path.dirname(os.path.abspath(new_weights))
                   == os.path.dirname(os.path.abspath(destination)))
    prefix = os.path.dirname(old_learned_net) if old_learned_net else ""
    if same_folder and prefix and _plain_relative(prefix):
        # Keep the prefix Caffe wrote (relative to where it ran), new file name.
        return os.path.join(prefix, os.path.basename(new_weights))
    return new_weights


def convert(source: str | os.PathLike, destination: str | os.PathLike, *,
            prototxt: str | None = None, source_format: str | None = None,
            destination_format: str | None = None, compress: str | None = None,
            overwrite: bool = False, weights: str | None = None,
            forward_check: bool | ForwardCheck = True, progress_factory=None,
            onnx_options: dict | None = None, target: str | None = None,
            solver: str | None = None, find_modules: bool = False) -> ConversionReport:
    """Convert a file; the output appears only once written and checked bit-exact.

    A solver state converts to ONNX with its weights (`weights`, else the
    learned_net beside it) and `solver` (its .prototxt): the model carries one
    Caffe iteration as ONNX training info. From such an ONNX model, a
    .solverstate[.h5] destination restores the state, and `weights` the
    weights file it names.

    `target` (a runtime that takes Caffe, blobcast.targets): a Caffe output
    must use only what it accepts, else nothing is written and every
    offending layer is named.

    `forward_check`: False skips running both models; a ForwardCheck gives its
    input shapes, device and tolerances.

    Every file one conversion writes (a state and its --weights, an imported
    net's .caffemodel and .prototxt) appears together, or none does."""
    after_commit: list = []
    group = OutputGroup()
    try:
        with group:
            report = _convert(source, destination, prototxt=prototxt, source_format=source_format,
                              destination_format=destination_format, compress=compress,
                              overwrite=overwrite, weights=weights, forward_check=forward_check,
                              progress_factory=progress_factory, onnx_options=onnx_options,
                              group=group, after_commit=after_commit, target=target,
                              solver=solver, find_modules=find_modules)
    finally:
        if group.committed:  # also when a signal came during the renames
            with uninterruptible(reraise=False):
                for action in after_commit:
                    action()
    return report


def _check_target(obj, dst_fmt, target: str, source: str) -> None:
    from .targets import lower_for, target_named, target_problems

    chosen = target_named(target)
    if "graph" in dst_fmt.holds or not isinstance(obj, Model):
        raise BlobcastError("--target names a runtime that takes Caffe; it goes with a Caffe net "
                            "written as .caffemodel, .caffemodel.h5 or .prototxt")
    lowered = lower_for(obj, chosen)
    if lowered:
        obj.notes = list(obj.notes) + [f"for {chosen.name}: " + "; ".join(lowered)]
    problems = target_problems(obj, chosen)
    if problems:
        raise CheckFailed(f"the net does not fit {chosen.name} ({chosen.description}): "
                          + "; ".join(problems), source)


def _read_for_conversion(source: str, prototxt, source_format, weights, solver, src_fmt, dst_fmt):
    """Read the source as the destination needs it: (what is written, the
    model a state came from, the weights path still to write)."""
    source_is_state = "solver_state" in src_fmt.holds
    if source_is_state and prototxt is not None and weights is None \
            and "graph" not in dst_fmt.holds:
        raise BlobcastError("with a solver state, --prototxt describes the weights "
                            "converted by --weights", prototxt)
    obj = load(source, prototxt=None if source_is_state else prototxt, format=source_format)
    trained_model = None
    if solver is not None and not (source_is_state and "graph" in dst_fmt.holds):
        raise BlobcastError("--solver goes with a solver state converted to ONNX")
    if source_is_state and "graph" in dst_fmt.holds:
        obj = _with_training(obj, weights, prototxt, solver, source)
        weights = None  # read, not written
    elif isinstance(obj, Model) and "solver_state" in dst_fmt.holds:
        if obj.training is None:
            raise FormatError("holds no Caffe training state (a model blobcast wrote from a "
                              ".solverstate carries one)", source)
        trained_model, obj = obj, obj.training.state
    return obj, trained_model, weights


def _prepare(obj, *, source: str, prototxt, dst_fmt, target, find_modules: bool) -> None:
    """Modules found, the net's wiring checked and the target's rewrites made
    before anything is written."""
    if find_modules:
        if not isinstance(obj, Model) or not obj.has_architecture:
            raise BlobcastError("--modules needs a net with its layer definitions")
        if not obj.modules:
            from .module_discovery import discover_modules

            discover_modules(obj)
    if isinstance(obj, Model) and obj.has_architecture:
        missing = obj.unproduced_bottoms()
        if missing:
            layer, bottom = missing[0]
            raise FormatError(f"layer {layer!r} reads blob {bottom!r}, which no earlier layer "
                              f"produces ({len(missing)} such bottom(s) in all)", prototxt or source)
    if target is not None:
        _check_target(obj, dst_fmt, target, source)


def _convert_weights_beside(obj, trained_model, *, source: str, destination: str, weights: str,
                            prototxt, overwrite: bool, forward_check, progress_factory,
                            group: OutputGroup, after_commit: list) -> ConversionReport:
    """A solver state's weights file, written beside it (--weights)."""
    check_distinct(source, weights)
    if trained_model is not None:
        report = _write_weights(trained_model, weights, overwrite, group)
    else:
        if not isinstance(obj, SolverState):
            raise BlobcastError("--weights goes with a solver state conversion")
        old_weights = obj.require_weights()
        report = _convert(old_weights, weights, prototxt=prototxt,
                          source_format=_converters().weights_format(old_weights),
                          destination_format=None, compress=None, overwrite=overwrite,
                          weights=None, forward_check=forward_check,
                          progress_factory=progress_factory, onnx_options=None,
                          group=group, after_commit=after_commit)
    obj.learned_net = _learned_net_for(obj.learned_net, weights, destination)
    return report


@dataclass
class _Written:
    check: str
    forward: dict | None = None
    forward_note: str | None = None
    target_note: str | None = None


def _write_and_check(obj, temporary: str, *, source: str, destination: str, src_fmt, dst_fmt,
                     prototxt, compress, onnx_options, advance, forward_check, check_options,
                     target, overwrite: bool, group: OutputGroup) -> _Written:
    """Write the destination's temporary file and check it: read back, and run
    forward beside the source where both have layers."""
    with about(source):  # what export finds wrong is the source's content
        save(obj, temporary, format=dst_fmt.name, compress=compress, progress=advance,
             **(onnx_options or {}))
    if "graph" in dst_fmt.holds:  # checked by onnx's checker and its runtime
        written = _Written(dst_fmt.module.check(temporary))
        if isinstance(obj, Model) and obj.training is not None:
            written.check += "; " + _check_training_read_back(obj, temporary, dst_fmt)
        if forward_check:
            with about(source):
                written.forward, written.forward_note = check_forward(
                    obj, temporary, strict=True, options=check_options)
    else:
        check, read_back = _verify_written(obj, temporary, dst_fmt, prototxt)
        written = _Written(check)
        if (forward_check and isinstance(obj, Model) and obj.has_architecture
                and {"architecture", "weights"} <= dst_fmt.holds):
            from_onnx = "graph" in src_fmt.holds
            run: dict = {}
            with about(source):
                written.forward, written.forward_note = check_forward(
                    source if from_onnx else obj, read_back, strict=from_onnx,
                    options=check_options, record=run)
            if target == "opencv":
                written.target_note = check_in_opencv(read_back, temporary, dst_fmt,
                                                      check_options, run)
    if "graph" in src_fmt.holds and dst_fmt.name == "caffemodel":
        # Tools that take a deploy prototxt and weights get both.
        _write_beside(obj, destination, ".prototxt", overwrite, group)
    return written


def _conversion_report(obj, written: _Written, *, source: str, destination: str, src_fmt, dst_fmt,
                       weights_report, caught, temporary) -> ConversionReport:
    report = ConversionReport(source, destination, src_fmt.name, dst_fmt.name, check=written.check,
                              forward=written.forward, weights=weights_report)
    report.tensors = len(obj.history) if isinstance(obj, SolverState) else len(obj.owned_params())
    report.bytes = obj.nbytes
    if not isinstance(obj, SolverState):
        report.layers = len(obj.layers)
        report.notes = list(obj.notes) + [note for note in (written.forward_note,
                                                            written.target_note) if note]
        if not obj.has_architecture and "architecture" in dst_fmt.holds:
            report.notes.append("the file carries no layer definitions (weights only): Caffe and "
                                "OpenCV load it together with the net's deploy prototxt")
        if "weights" not in dst_fmt.holds and obj.owned_params():
            report.notes.append("a .prototxt holds the architecture only; the weights were not written")
    # Writers name the file they write: the temporary one; say the destination.
    said = [(str(w.message).replace(temporary or "\0", destination), w.category) for w in caught]
    for message, kind in said:
        if issubclass(kind, BlobcastNote) and message not in report.notes:
            report.notes.append(message)
    report.warnings = [message for message, kind in said if not issubclass(kind, BlobcastNote)]
    return report


def _convert(source, destination, *, prototxt, source_format, destination_format, compress,
             overwrite, weights, forward_check, progress_factory, onnx_options,
             group: OutputGroup, after_commit: list, target: str | None = None,
             solver: str | None = None, find_modules: bool = False) -> ConversionReport:
    """plan -> read -> prepare -> write -> check -> report."""
    source, destination = os.fspath(source), os.fspath(destination)
    started = time.perf_counter()
    check_options = forward_check if isinstance(forward_check, ForwardCheck) else ForwardCheck()
    converters = _converters()
    check_distinct(source, destination)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        src_fmt = converters.detect_format(source, source_format)
        dst_fmt = converters.output_format(destination, destination_format)
        outputs = _outputs_of(destination, weights, src_fmt, dst_fmt)
        check_apart([source, prototxt, solver] + ([weights] if weights not in outputs else []), outputs)
        obj, trained_model, weights = _read_for_conversion(source, prototxt, source_format, weights,
                                                           solver, src_fmt, dst_fmt)
        _check_kind(obj, dst_fmt, destination)
        _prepare(obj, source=source, prototxt=prototxt, dst_fmt=dst_fmt, target=target,
                 find_modules=find_modules)
        weights_report = None
        if weights is not None:
            weights_report = _convert_weights_beside(
                obj, trained_model, source=source, destination=destination, weights=weights,
                prototxt=prototxt, overwrite=overwrite, forward_check=forward_check,
                progress_factory=progress_factory, group=group, after_commit=after_commit)
        total = obj.nbytes if hasattr(obj, "nbytes") else 0
        progress = progress_factory(total, os.path.basename(destination)) if progress_factory else None

        def advance(amount: int) -> None:
            check_stop()
            if progress:
                progress.advance(amount)

        temporary = None
        if onnx_options and "graph" not in dst_fmt.holds:
            raise BlobcastError("the ONNX options (--opset, --input, --shape, --dynamic-batch, "
                                "--external-data, --strict) go with an .onnx destination")
        try:
            if "graph" in dst_fmt.holds and overwrite and os.path.isfile(destination):
                after_commit.append(dst_fmt.module.replaced_data_remover(destination))
            with atomic_destination(destination, overwrite=overwrite, group=group) as temporary:
                written = _write_and_check(
                    obj, temporary, source=source, destination=destination, src_fmt=src_fmt,
                    dst_fmt=dst_fmt, prototxt=prototxt, compress=compress,
                    onnx_options=onnx_options, advance=advance, forward_check=forward_check,
                    check_options=check_options, target=target, overwrite=overwrite, group=group)
        except BlobcastError as error:
            if temporary and error.path and temporary in error.path:
                # The user knows the destination, not our temporary name for it.
                renamed = type(error)(error.problem.replace(temporary, destination), destination)
                raise renamed from error.__cause__
            raise
        finally:
            if progress:
                progress.close()
    report = _conversion_report(obj, written, source=source, destination=destination,
                                src_fmt=src_fmt, dst_fmt=dst_fmt, weights_report=weights_report,
                                caught=caught, temporary=temporary)
    for message in report.warnings:
        warnings.warn(message, BlobcastWarning, stacklevel=2)
    report.seconds = time.perf_counter() - started
    return report
