"""`convert`: plan -> read -> prepare -> write -> check -> report, each a
named step. The plan (the two formats, every file written) is made once
and passed along; every file one conversion writes appears together, or
none does."""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field

from ..check.forward import ForwardCheck, check_forward, check_in_opencv
from ..errors import BlobcastError, BlobcastNote, BlobcastWarning, CheckFailed, FormatError, about
from ..fileio import OutputGroup, atomic_destination, check_apart, check_distinct, check_stop
from ..io import check_kind, converters, read_as, reading, write_as
from ..model import Model
from ..solver import SolverState
from ..stopping import uninterruptible
from .report import ConversionReport
from .states import learned_net_for, with_training, write_weights


@dataclass
class Request:
    """What the caller asked for (convert's arguments)."""

    source: str
    destination: str
    prototxt: str | None = None
    source_format: str | None = None
    destination_format: str | None = None
    compress: str | None = None
    overwrite: bool = False
    weights: str | None = None
    forward_check: bool | ForwardCheck = True
    progress_factory: object = None
    onnx_options: dict | None = None
    target: str | None = None
    solver: str | None = None
    find_modules: bool = False

    @property
    def check_options(self) -> ForwardCheck:
        return self.forward_check if isinstance(self.forward_check, ForwardCheck) else ForwardCheck()


@dataclass
class Plan:
    """The source's and the destination's formats, and every file written."""

    source_format: object
    destination_format: object
    outputs: list[str]
    net_definition: str | None = None  # the deploy .prototxt written beside the destination


@dataclass
class Outputs:
    """The one group every file of a conversion is written in, and what runs
    once it is committed."""

    group: OutputGroup = field(default_factory=OutputGroup)
    after_commit: list = field(default_factory=list)


@dataclass
class _Written:
    check: str
    forward: dict | None = None
    forward_note: str | None = None
    target_note: str | None = None


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
    request = Request(os.fspath(source), os.fspath(destination), prototxt=prototxt,
                      source_format=source_format, destination_format=destination_format,
                      compress=compress, overwrite=overwrite, weights=weights,
                      forward_check=forward_check, progress_factory=progress_factory,
                      onnx_options=onnx_options, target=target, solver=solver,
                      find_modules=find_modules)
    outputs = Outputs()
    try:
        with outputs.group:
            report = convert_within(request, outputs)
    finally:
        if outputs.group.committed:  # also when a signal came during the renames
            with uninterruptible(reraise=False):
                for action in outputs.after_commit:
                    action()
    return report


def convert_within(request: Request, outputs: Outputs) -> ConversionReport:
    """One conversion whose files join `outputs`' group."""
    started = time.perf_counter()
    check_distinct(request.source, request.destination)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = make_plan(request)
        obj, trained_model, weights = read_source(request, plan)
        check_kind(obj, plan.destination_format, request.destination)
        prepare(obj, request, plan)
        weights_report = None
        if weights is not None:
            weights_report = convert_weights_beside(obj, trained_model, request, weights, outputs)
        written, temporary = write_and_check(obj, request, plan, outputs)
    report = conversion_report(obj, written, request, plan, weights_report, caught, temporary)
    for message in report.warnings:
        warnings.warn(message, BlobcastWarning, stacklevel=2)
    report.seconds = time.perf_counter() - started
    return report


def make_plan(request: Request) -> Plan:
    """The formats (each detected once) and every file the conversion writes
    (--weights is read, not written, when a solver state becomes a file that
    runs by itself); none of them is an input."""
    found = converters()
    src = found.detect_format(request.source, request.source_format)
    dst = found.output_format(request.destination, request.destination_format)
    plan = Plan(src, dst, [request.destination])
    weights_read = src.holds_solver_state and dst.runs_by_itself
    if request.weights is not None and not weights_read:
        plan.outputs.append(request.weights)
    if src.runs_by_itself:  # tools that take a deploy prototxt and weights get both
        plan.net_definition = dst.companions(request.destination).net_definition
        if plan.net_definition is not None:
            plan.outputs.append(plan.net_definition)
    inputs = [request.source, request.prototxt, request.solver]
    check_apart(inputs + ([request.weights] if request.weights not in plan.outputs else []),
                plan.outputs)
    return plan


def read_source(request: Request, plan: Plan):
    """The source read as the destination needs it: (what is written, the
    model a state came from, the weights path still to write)."""
    src, dst = plan.source_format, plan.destination_format
    weights, prototxt = request.weights, request.prototxt
    if src.holds_solver_state and prototxt is not None and weights is None \
            and not dst.runs_by_itself:
        raise BlobcastError("with a solver state, --prototxt describes the weights "
                            "converted by --weights", prototxt)
    obj = read_as(request.source, src, None if src.holds_solver_state else prototxt)
    trained_model = None
    training_kept = src.holds_solver_state and dst.runs_by_itself
    if request.solver is not None and not training_kept:
        raise BlobcastError("--solver goes with a solver state converted to ONNX")
    if training_kept:
        obj = with_training(obj, weights, prototxt, request.solver, request.source)
        weights = None  # read, not written
    elif isinstance(obj, Model) and dst.holds_solver_state:
        if obj.training is None:
            raise FormatError("holds no Caffe training state (a model blobcast wrote from a "
                              ".solverstate carries one)", request.source)
        trained_model, obj = obj, obj.training.state
    return obj, trained_model, weights


def prepare(obj, request: Request, plan: Plan) -> None:
    """Modules found, the net's wiring checked and the target's rewrites made
    before anything is written."""
    if request.find_modules:
        if not isinstance(obj, Model) or not obj.has_architecture:
            raise BlobcastError("--modules needs a net with its layer definitions")
        if not obj.modules:
            from ..module_discovery import discover_modules

            discover_modules(obj)
    if isinstance(obj, Model) and obj.has_architecture:
        missing = obj.unproduced_bottoms()
        if missing:
            layer, bottom = missing[0]
            raise FormatError(f"layer {layer!r} reads blob {bottom!r}, which no earlier layer "
                              f"produces ({len(missing)} such bottom(s) in all)",
                              request.prototxt or request.source)
    if request.target is not None:
        _check_target(obj, plan.destination_format, request.target, request.source)


def _check_target(obj, dst, target: str, source: str) -> None:
    from ..targets import lower_for, target_named, target_problems

    chosen = target_named(target)
    if dst.runs_by_itself or not isinstance(obj, Model):
        raise BlobcastError("--target names a runtime that takes Caffe; it goes with a Caffe net "
                            "written as .caffemodel, .caffemodel.h5 or .prototxt")
    lowered = lower_for(obj, chosen)
    if lowered:
        obj.notes = list(obj.notes) + [f"for {chosen.name}: " + "; ".join(lowered)]
    problems = target_problems(obj, chosen)
    if problems:
        raise CheckFailed(f"the net does not fit {chosen.name} ({chosen.description}): "
                          + "; ".join(problems), source)


def convert_weights_beside(obj, trained_model, request: Request, weights: str,
                           outputs: Outputs) -> ConversionReport:
    """A solver state's weights file, written beside it (--weights)."""
    check_distinct(request.source, weights)
    if trained_model is not None:
        report = write_weights(trained_model, weights, request.overwrite, outputs.group)
    else:
        if not isinstance(obj, SolverState):
            raise BlobcastError("--weights goes with a solver state conversion")
        old_weights = obj.require_weights()
        report = convert_within(Request(
            old_weights, weights, prototxt=request.prototxt,
            source_format=converters().weights_format(old_weights), overwrite=request.overwrite,
            forward_check=request.forward_check, progress_factory=request.progress_factory),
            outputs)
    obj.learned_net = learned_net_for(obj.learned_net, weights, request.destination)
    return report


def _progress(obj, request: Request):
    """What each written chunk advances (and where a stop request lands)."""
    total = obj.nbytes if hasattr(obj, "nbytes") else 0
    factory = request.progress_factory
    progress = factory(total, os.path.basename(request.destination)) if factory else None

    def advance(amount: int) -> None:
        check_stop()
        if progress:
            progress.advance(amount)

    return progress, advance


def write_and_check(obj, request: Request, plan: Plan, outputs: Outputs):
    """The destination written to a temporary file and checked there, then
    joined to the group: (what the checks found, the temporary path)."""
    dst, destination = plan.destination_format, request.destination
    if request.onnx_options and not dst.runs_by_itself:
        raise BlobcastError("the ONNX options (--opset, --input, --shape, --dynamic-batch, "
                            "--external-data, --strict) go with an .onnx destination")
    progress, advance = _progress(obj, request)
    temporary = None
    try:
        replaced = dst.companions(destination).replaced
        if replaced is not None and request.overwrite and os.path.isfile(destination):
            outputs.after_commit.append(replaced())
        with atomic_destination(destination, overwrite=request.overwrite,
                                group=outputs.group) as temporary:
            with about(request.source):  # what export finds wrong is the source's content
                write_as(obj, temporary, dst, compress=request.compress, progress=advance,
                         **(request.onnx_options or {}))
            written = check_written(obj, temporary, request, plan)
            if plan.net_definition is not None:
                _write_net_definition(obj, plan.net_definition, request.overwrite, outputs.group)
    except BlobcastError as error:
        if temporary and error.path and temporary in error.path:
            # The user knows the destination, not our temporary name for it.
            renamed = type(error)(error.problem.replace(temporary, destination), destination)
            raise renamed from error.__cause__
        raise
    finally:
        if progress:
            progress.close()
    return written, temporary


def check_written(obj, temporary: str, request: Request, plan: Plan) -> _Written:
    """The written file read back (or checked by its own runtime's checker),
    then run forward beside the source where both have layers."""
    src, dst = plan.source_format, plan.destination_format
    check, read_back = reading(temporary, lambda: dst.verify_written(obj, temporary,
                                                                     request.prototxt))
    written = _Written(check)
    if not request.forward_check:
        return written
    options = request.check_options
    if dst.runs_by_itself:  # its own runtime runs the written file
        with about(request.source):
            written.forward, written.forward_note = check_forward(obj, temporary, strict=True,
                                                                  options=options)
    elif (isinstance(obj, Model) and obj.has_architecture and dst.holds_architecture
          and dst.holds_weights):
        run: dict = {}
        with about(request.source):
            written.forward, written.forward_note = check_forward(
                request.source if src.runs_by_itself else obj, read_back,
                strict=src.runs_by_itself, options=options, record=run)
        if request.target == "opencv":
            written.target_note = check_in_opencv(read_back, temporary, dst, options, run)
    return written


def _write_net_definition(model: Model, path: str, overwrite: bool, group: OutputGroup) -> None:
    try:
        with atomic_destination(path, overwrite=overwrite, group=group) as temporary:
            write_as(model, temporary, converters().output_format(path))
    except FormatError as error:  # a setting with no text form: the weights file still holds it all
        warnings.warn(f"{path} not written: {error.problem}", BlobcastWarning, stacklevel=2)


def conversion_report(obj, written: _Written, request: Request, plan: Plan, weights_report,
                      caught, temporary) -> ConversionReport:
    dst = plan.destination_format
    report = ConversionReport(request.source, request.destination, plan.source_format.name,
                              dst.name, check=written.check, forward=written.forward,
                              weights=weights_report)
    report.tensors = len(obj.history) if isinstance(obj, SolverState) else len(obj.owned_params())
    report.bytes = obj.nbytes
    if not isinstance(obj, SolverState):
        report.layers = len(obj.layers)
        report.notes = list(obj.notes) + [note for note in (written.forward_note,
                                                            written.target_note) if note]
        if not obj.has_architecture and dst.holds_architecture:
            report.notes.append("the file carries no layer definitions (weights only): Caffe and "
                                "OpenCV load it together with the net's deploy prototxt")
        if not dst.holds_weights and obj.owned_params():
            report.notes.append("a .prototxt holds the architecture only; the weights were not written")
    # Writers name the file they write: the temporary one; say the destination.
    said = [(str(w.message).replace(temporary or "\0", request.destination), w.category)
            for w in caught]
    for message, kind in said:
        if issubclass(kind, BlobcastNote) and message not in report.notes:
            report.notes.append(message)
    report.warnings = [message for message, kind in said if not issubclass(kind, BlobcastNote)]
    return report

