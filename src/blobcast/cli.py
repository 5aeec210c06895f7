"""The `blobcast` command line: convert, inspect, verify, run.

Every option is declared with its explicit name: without one, some typer and
click versions derive the name from the metavar (`--PROTOTXT`).
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Annotated, Optional

import typer

from . import __version__
from .cli_commands import DEFAULT_OPSET_MARK, ConventionGroup, PlainCommand, print_json
from .cli_output import (
    format_error,
    print_verify,
    progress_factory,
    stderr,
    stdout,
    summary_lines,
)
from .display import safe as escape
from .errors import BlobcastError, BlobcastNote
from .stopping import (
    Interrupted,
    check_stop,
    forget_committed_outputs,
    install_stop_handlers,
    interruption,
    stop_requested,
)
from .targets import TARGETS

app = typer.Typer(cls=ConventionGroup, add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Convert, inspect and verify Caffe models. --json, --debug and --memory-budget "
                  "go before or after the command.")

for _console in (stdout, stderr):
    if not _console.is_terminal:
        _console.width = 1000  # pipes and files get whole lines, not an 80-column cut
_state: dict = {"debug": False, "memory_budget": None, "json": False}
# The format names --from/--to take (a test checks them against the converters).
FORMAT_NAMES = ("caffemodel", "caffemodel-h5", "prototxt", "binaryproto", "npy", "onnx",
                "solverstate", "solverstate-h5")

JsonOption = Annotated[bool, typer.Option(
    "--json", help="Print one JSON object on stdout, also on failure.")]
DebugOption = Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")]
BudgetOption = Annotated[Optional[str], typer.Option(
    "--memory-budget", metavar="SIZE",
    help="Most memory a file may make blobcast allocate (default 4G; e.g. 512M, 16G).")]
PrototxtOption = Annotated[Optional[str], typer.Option(
    "--prototxt", metavar="PROTOTXT",
    help="Net definition to pair with a weights file (layers matched by name).")]
FromOption = Annotated[Optional[str], typer.Option(
    "--from", metavar="FORMAT", help="Format of the input: " + ", ".join(FORMAT_NAMES) + ".")]
InputOption = Annotated[Optional[list[str]], typer.Option(
    "--input", metavar="NAME=SHAPE|NAME=FILE.npy",
    help="Input values: a shape (seeded random values) or a .npy file; repeatable.")]
DeviceOption = Annotated[str, typer.Option(
    "--device", metavar="cpu|gpu|auto", help="Where to run: CPU (NumPy), GPU (CuPy) or either.")]
TargetOption = Annotated[Optional[str], typer.Option(
    "--target", metavar="NAME", help="A runtime that takes Caffe: " + ", ".join(TARGETS)
    + "; the net must use only what it accepts.")]
WinogradOption = Annotated[bool, typer.Option(
    "--winograd/--no-winograd", help="Stride-1 3x3 convolutions by Winograd's F(2x2, 3x3), "
    "faster, within Caffe's float32 rounding (the default); --no-winograd: every "
    "convolution summed in Caffe's order (docs/engine.md).")]
PrecisionOption = Annotated[Optional[str], typer.Option(
    "--precision", metavar="DTYPE", help="The engine's arithmetic (f8: float64), not the weights' own.")]
AtolOption = Annotated[float, typer.Option("--atol", metavar="X", help="Absolute tolerance.")]
RtolOption = Annotated[float, typer.Option(
    "--rtol", metavar="Y", help="Relative tolerance (of max(|a|, |b|)).")]
PythonLayersOption = Annotated[bool, typer.Option(
    "--allow-python-layers", help="Run Python layers (imports and runs their modules).")]
PythonPathOption = Annotated[Optional[list[str]], typer.Option(
    "--python-path", metavar="DIR", help="Folder to import Python layers from; repeatable.")]
LayerPluginOption = Annotated[Optional[list[str]], typer.Option(
    "--layer-plugin", metavar="FILE", help="Python file registering layer types the engine lacks "
    "(imports and runs it); repeatable.")]
SeedOption = Annotated[int, typer.Option("--seed", metavar="N", help="Seed of the random inputs.")]


def _debug_enabled() -> bool:
    return _state["debug"] or os.environ.get("BLOBCAST_DEBUG", "") not in ("", "0")


def _fail(message: str, code: int, json_output: bool) -> typer.Exit:
    if json_output:  # a pipeline never parses an empty stdout
        print_json({"ok": False, "error": message, "exit_code": code})
    stderr.print(f"blobcast: error: {escape(message)}")
    return typer.Exit(code)


def _run(action, *, json_output: bool = False, debug: bool = False,
         memory_budget: str | None = None, files=()):
    """Run a command body: one-line errors, exit codes 0/1/2, no traceback unless asked.
    `files`: what the command reads, named in a failure nothing anticipated."""
    from . import limits

    _state["debug"] = _state["debug"] or debug
    previous_budget = limits.budget_setting()
    try:
        # None: the variable or the default; restored afterwards, so that a
        # command run in-process leaves the caller's budget as it was
        limits.set_memory_budget(memory_budget or _state["memory_budget"])
        forget_committed_outputs()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = action()
            check_stop()  # a signal recorded while a step finished
        said = {}  # each once: a file's format is looked up by more than one step
        for warning in caught:
            kind = "note" if issubclass(warning.category, BlobcastNote) else "warning"
            said.setdefault((kind, str(warning.message)), None)
        for kind, message in said:
            stderr.print(f"blobcast: {kind}: {escape(message)}")
        return result
    except typer.Exit:
        raise
    except BlobcastError as error:
        if _debug_enabled():
            stderr.print_exception()
        raise _fail(str(error), error.exit_code, json_output) from None
    except (KeyboardInterrupt, Interrupted):
        from .fileio import remove_temporary_folders

        remove_temporary_folders()  # one a signal kept the clean-up from reaching
        code, message = interruption()
        raise _fail(message, code, json_output) from None
    except Exception as error:  # a bug or an input we failed to anticipate
        if _debug_enabled():
            stderr.print_exception()
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        named = ", ".join(os.fspath(f) for f in files if f)
        raise _fail(f"{named + ': ' if named else ''}unexpected {type(error).__name__}"
                    f"{': ' + detail if detail else ''} (run with --debug for the traceback)",
                    2, json_output) from None
    finally:
        limits.set_memory_budget(previous_budget)


def _show_version(value: bool) -> None:
    if value:
        stdout.print(f"blobcast {__version__}")
        raise typer.Exit()


@app.callback()
def _main(debug: DebugOption = False, memory_budget: BudgetOption = None,
          json_output: JsonOption = False,
          version: Annotated[bool, typer.Option(
              "--version", callback=_show_version, is_eager=True,
              help="Print the version and exit.")] = False):
    _state["debug"] = debug
    _state["memory_budget"] = memory_budget
    _state["json"] = json_output


def _input_values(specs, option: str = "--input") -> dict:
    """NAME=SHAPE or NAME=file.npy specs: name -> shape (a list) or the array."""
    from .check.verify import parse_input_spec

    return dict(parse_input_spec(spec, option) for spec in specs or ())


def _input_shapes(specs, option: str = "--input") -> dict:
    shapes = {}
    for name, value in _input_values(specs, option).items():
        if not isinstance(value, list):
            raise BlobcastError(f"{option} {name}=...: give a shape, not a file")
        shapes[name] = value
    return shapes


def _onnx_options(opset, dynamic_batch, external_data, strict) -> dict:
    options = {}
    if opset is not None:
        from .converters.onnx_format import check_opset

        options["opset"] = check_opset(opset)
    if dynamic_batch:
        options["dynamic_batch"] = True
    if external_data is not None:
        options["external_data"] = external_data
    if strict:
        options["strict"] = True
    return options


@app.command(cls=PlainCommand,
             short_help="Convert between formats, checked before the output appears.")
def convert(
    source: Annotated[str, typer.Argument(metavar="SOURCE", help="File to read.", show_default=False)],
    destination: Annotated[str, typer.Argument(
        metavar="DESTINATION", help="File to write; its suffix picks the format.", show_default=False)],
    prototxt: PrototxtOption = None,
    compress: Annotated[Optional[str], typer.Option(
        "--compress", metavar="gzip", help="Compress HDF5 datasets.")] = None,
    from_format: FromOption = None,
    to_format: Annotated[Optional[str], typer.Option(
        "--to", metavar="FORMAT", help="Format of DESTINATION: " + ", ".join(FORMAT_NAMES) + ".")] = None,
    weights: Annotated[Optional[str], typer.Option(
        "--weights", metavar="WEIGHTS",
        help="With a solver state: also convert its learned_net weights to this file "
             "and point the new state at it. State to ONNX: the weights to read (default: "
             "its learned_net). ONNX to state: the weights file to write.")] = None,
    solver: Annotated[Optional[str], typer.Option(
        "--solver", metavar="SOLVER",
        help="Solver .prototxt: with a solver state converted to ONNX, the model gets the "
             "training step it defines.")] = None,
    find_modules: Annotated[bool, typer.Option(
        "--modules", help="Find the blocks a flat net repeats and write them as modules "
        "(ONNX functions, the .caffemodel.h5 module record).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace DESTINATION if it exists.")] = False,
    verify_forward: Annotated[bool, typer.Option(
        "--verify/--no-verify", help="Also run both models forward on the same inputs and "
        "compare their outputs (where both have layers).")] = True,
    inputs: Annotated[Optional[list[str]], typer.Option(
        "--input", metavar="NAME=SHAPE|FILE.npy",
        help="An input for the forward check and the ONNX export: a shape (seeded random "
             "values) or a .npy file (its values: an ROI net needs real ROIs); repeatable.")] = None,
    atol: AtolOption = 1e-5,
    rtol: RtolOption = 1e-3,
    device: DeviceOption = "cpu",
    opset: Annotated[Optional[int], typer.Option(
        "--opset", metavar="N", help="ONNX: the opset to write (at least 17; default "
        + DEFAULT_OPSET_MARK + ": the newest blobcast and the installed onnx and onnxruntime "
        "take).")] = None,
    dynamic_batch: Annotated[bool, typer.Option(
        "--dynamic-batch", help="ONNX: make the batch dimension symbolic.")] = False,
    external_data: Annotated[Optional[bool], typer.Option(
        "--external-data/--no-external-data",
        help="ONNX: tensors in a .data file beside the model (default: above 2 GB).")] = None,
    strict: Annotated[bool, typer.Option(
        "--strict", help="ONNX: refuse layers with no ONNX equivalent.")] = False,
    given_shapes: Annotated[Optional[list[str]], typer.Option(
        "--shape", metavar="BLOB=SHAPE",
        help="ONNX: the shape of a top of a layer blobcast cannot run (written as a custom "
             "node); repeatable.")] = None,
    layer_plugins: LayerPluginOption = None,
    target: TargetOption = None,
    memory_budget: BudgetOption = None,
    debug: DebugOption = False,
    json_output: JsonOption = False,
):
    """Convert between Caffe formats and ONNX; the output is checked before it appears."""
    from .app.convert import convert as convert_file
    from .check.forward import ForwardCheck

    json_output = json_output or _state["json"]

    def body():
        from .check.inputs import input_shapes
        from .engine.plugins import load_layer_plugin
        from .fileio import check_apart

        check_apart(layer_plugins or (), [destination])
        for plugin in layer_plugins or ():
            load_layer_plugin(plugin)
        values = _input_values(inputs)  # a .npy file's values feed the check (real ROIs)
        shapes = input_shapes(values)
        onnx_options = _onnx_options(opset, dynamic_batch, external_data, strict)
        if shapes and (to_format == "onnx" or destination.lower().endswith(".onnx")):
            onnx_options["input_shapes"] = shapes
        if given_shapes:
            onnx_options["given_shapes"] = _input_shapes(given_shapes, "--shape")
        check = ForwardCheck(inputs=values, device=device, atol=atol, rtol=rtol) if verify_forward \
            else False
        report = convert_file(source, destination, prototxt=prototxt, source_format=from_format,
                              destination_format=to_format, compress=compress, overwrite=force,
                              weights=weights, forward_check=check,
                              progress_factory=progress_factory(json_output),
                              onnx_options=onnx_options or None, target=target,
                              solver=solver, find_modules=find_modules)
        if json_output:
            print_json({"ok": True, **report.to_dict()})
            return
        for note in (report.weights.notes if report.weights else []) + report.notes:
            stderr.print(f"blobcast: note: {escape(note)}")
        for line in summary_lines(report):
            stdout.print(line)

    _run(body, json_output=json_output, debug=debug, memory_budget=memory_budget,
         files=[source, prototxt])


@app.command(cls=PlainCommand, short_help="Show a model's layers and blobs, or a solver state's history.")
def inspect(
    file: Annotated[str, typer.Argument(metavar="FILE", help="Model, net definition or solver state.",
                                        show_default=False)],
    prototxt: PrototxtOption = None,
    solver: Annotated[Optional[str], typer.Option(
        "--solver", metavar="SOLVER",
        help="Solver .prototxt, to name the solver type and tie history to parameters.")] = None,
    stats: Annotated[bool, typer.Option("--stats", help="Add min/max/mean/std and NaN/Inf "
                                        "counts per tensor (reads the weights).")] = False,
    from_format: FromOption = None,
    target: TargetOption = None,
    modules: Annotated[bool, typer.Option(
        "--modules", help="Show the net as module instances, one line each (blocks of a net "
        "written flat are found).")] = False,
    memory_budget: BudgetOption = None,
    debug: DebugOption = False,
    json_output: JsonOption = False,
):
    """Show a model's layers and blobs (or a solver state's history) as a tree."""
    from .app.inspect import inspect_file

    json_output = json_output or _state["json"]

    def body():
        facts = inspect_file(file, prototxt=prototxt, stats=stats, solver=solver,
                             file_format=from_format, target=target, modules=modules)
        fits = facts.get("target", {}).get("fits", True)
        if json_output:
            print_json({"ok": fits, **facts, **({} if fits else {"exit_code": 1})})
        else:
            from .render import render

            stdout.print(render(facts))
        if not fits:  # a pipeline's check that a model suits its runtime
            raise typer.Exit(1)

    _run(body, json_output=json_output, debug=debug, memory_budget=memory_budget,
         files=[file, prototxt, solver])


def _run_options(prototxt, inputs, seed, all_blobs, device, allow_python_layers, python_path,
                 random_weights: bool = False, layer_plugins=None, winograd: bool = True,
                 precision: str | None = None):
    from .check.verify import RunOptions

    return RunOptions(prototxt=prototxt, inputs=tuple(inputs or ()), seed=seed,
                      all_blobs=all_blobs, device=device,
                      allow_python_layers=allow_python_layers,
                      python_path=tuple(python_path or ()), random_weights=random_weights,
                      layer_plugins=tuple(layer_plugins or ()), winograd=winograd,
                      precision=precision)


def _say(report: dict, json_output: bool, line: str) -> None:
    """A command's report: the JSON object, or its one line."""
    if json_output:
        print_json({"ok": True, **report})
    else:
        stdout.print(line)


@app.command(cls=PlainCommand, short_help="Write a flat net with its repeated blocks as modules.")
def modularize(
    source: Annotated[str, typer.Argument(metavar="NET", help="Net (.prototxt, or weights with "
                                          "--prototxt).", show_default=False)],
    destination: Annotated[str, typer.Argument(metavar="OUT", help="The modular .prototxt to write.",
                                               show_default=False)],
    prototxt: PrototxtOption = None,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it exists.")] = False,
    memory_budget: BudgetOption = None,
    debug: DebugOption = False,
    json_output: JsonOption = False,
):
    """Find the blocks a flat net repeats and write it with each defined once as a module
    and instantiated where it occurs; checked to flatten back to the same net."""
    from .app.modularize import modularize as modularize_net

    json_output = json_output or _state["json"]

    def body():
        report = modularize_net(source, destination, prototxt=prototxt, overwrite=force)
        found = ", ".join(f"{escape(m['module'])} x{len(m['instances'])}" for m in report["modules"])
        _say(report, json_output,
             f"{escape(source)} -> {escape(destination)}: {found or 'no repeated blocks'}; "
             f"{report['lines']['flat']} lines flat, {report['lines']['modular']} modular")

    _run(body, json_output=json_output, debug=debug, memory_budget=memory_budget,
         files=[source, prototxt])


@app.command(cls=PlainCommand, short_help="Draw the net as a graph, modules as clusters.")
def draw(
    source: Annotated[str, typer.Argument(metavar="NET", help="Model or net definition.",
                                          show_default=False)],
    destination: Annotated[str, typer.Argument(
        metavar="OUT", help="Drawing to write: .dot (text), or .svg/.png/.pdf with Graphviz.",
        show_default=False)],
    prototxt: PrototxtOption = None,
    expand: Annotated[bool, typer.Option("--expand", help="Show each module instance's layers "
                                         "inside a cluster, not one box per instance.")] = False,
    against: Annotated[Optional[str], typer.Option(
        "--against", metavar="B", help="Colour each blob by its error against model B (or an "
        ".npz of blobs), as verify --all-blobs measures it.")] = None,
    inputs: Annotated[Optional[list[str]], typer.Option(
        "--input", metavar="NAME=SHAPE", help="An input shape for the comparison.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it exists.")] = False,
    memory_budget: BudgetOption = None,
    debug: DebugOption = False,
    json_output: JsonOption = False,
):
    """Draw the net as Caffe's draw_net.py does, with module instances as clusters (found in
    flat nets), blob shapes on the edges, and with --against the error of each blob."""
    from .app.draw import draw_file as draw_net

    json_output = json_output or _state["json"]

    def body():
        from .check.verify import RunOptions

        report = draw_net(source, destination, prototxt=prototxt, expand=expand, against=against,
                          options=RunOptions(inputs=tuple(inputs or ())), overwrite=force)
        first = f"; first bad blob: {escape(report['first_mismatch'])}" if report["first_mismatch"] else ""
        _say(report, json_output,
             f"{escape(source)} -> {escape(destination)} ({report['format']}): "
             f"{report['layers']} layers, {report['instances']} module instances{first}")

    _run(body, json_output=json_output, debug=debug, memory_budget=memory_budget,
         files=[source, prototxt, against])


@app.command(cls=PlainCommand, short_help="Run A and B on the same inputs and compare their outputs.")
def verify(
    a: Annotated[str, typer.Argument(metavar="A", help="A model (any format with layers).",
                                     show_default=False)],
    b: Annotated[str, typer.Argument(metavar="B", help="Another model, or an .npz of recorded blobs.",
                                     show_default=False)],
    prototxt: PrototxtOption = None,
    inputs: InputOption = None,
    seed: SeedOption = 0,
    atol: AtolOption = 1e-5,
    rtol: RtolOption = 1e-3,
    tolerance: Annotated[Optional[list[str]], typer.Option(
        "--tolerance", metavar="BLOB=ATOL,RTOL",
        help="Tolerances for one blob, taken as given (--atol/--rtol are judged relative to each "
        "blob's range); repeatable.")] = None,
    all_blobs: Annotated[bool, typer.Option(
        "--all-blobs", help="Compare every blob the two share by name, not just outputs.")] = False,
    device: DeviceOption = "cpu",
    winograd: WinogradOption = True,
    allow_nonfinite: Annotated[bool, typer.Option(
        "--allow-nonfinite", help="Accept NaN/Inf outputs where both sides hold the same.")] = False,
    allow_python_layers: PythonLayersOption = False,
    python_path: PythonPathOption = None,
    layer_plugins: LayerPluginOption = None,
    memory_budget: BudgetOption = None,
    debug: DebugOption = False,
    json_output: JsonOption = False,
):
    """Run A and B on the same inputs and compare their outputs (exit 1 on a mismatch)."""
    from .app.verify import verify as verify_models

    json_output = json_output or _state["json"]

    def body():
        options = _run_options(prototxt, inputs, seed, all_blobs, device, allow_python_layers,
                               python_path, layer_plugins=layer_plugins, winograd=winograd)
        report = verify_models(a, b, options, atol=atol, rtol=rtol,
                               allow_nonfinite=allow_nonfinite, tolerance_specs=tolerance or ())
        if json_output:
            print_json({"ok": report.passed, "exit_code": 0 if report.passed else 1,
                         **report.to_dict()})
        else:
            print_verify(report)
        if not report.passed:
            raise typer.Exit(1)

    _run(body, json_output=json_output, debug=debug, memory_budget=memory_budget,
         files=[a, b, prototxt])


@app.command("run", cls=PlainCommand, short_help="Run one model forward and show (or --save) its outputs.")
def run_command(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="The model to run.", show_default=False)],
    prototxt: PrototxtOption = None,
    inputs: InputOption = None,
    seed: SeedOption = 0,
    all_blobs: Annotated[bool, typer.Option("--all-blobs", help="Keep every blob.")] = False,
    device: DeviceOption = "cpu",
    winograd: WinogradOption = True,
    precision: PrecisionOption = None,
    save: Annotated[Optional[str], typer.Option(
        "--save", metavar="NPZ", help="Write inputs and blobs to this .npz, keyed by blob name.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the .npz if it exists.")] = False,
    random_weights: Annotated[bool, typer.Option(
        "--random-weights", help="Give layers without weights seeded random ones from their "
        "fillers (--seed): a shape and speed check of a net definition alone.")] = False,
    allow_python_layers: PythonLayersOption = False,
    python_path: PythonPathOption = None,
    layer_plugins: LayerPluginOption = None,
    memory_budget: BudgetOption = None,
    debug: DebugOption = False,
    json_output: JsonOption = False,
):
    """Run one model forward and show (or --save) its outputs."""
    from .app.run import run as run_model

    json_output = json_output or _state["json"]

    def body():
        options = _run_options(prototxt, inputs, seed, all_blobs, device, allow_python_layers,
                               python_path, random_weights, layer_plugins, winograd, precision)
        result = run_model(model, options, save=save, overwrite=force)
        given, blobs, notes, summary = result.inputs, result.blobs, result.notes, result.summary()
        if json_output:
            print_json({"ok": True, "model": model,
                         "inputs": {k: list(v.shape) for k, v in given.items()},
                         "blobs": summary, "saved": save, "notes": notes})
            return
        for note in notes:
            stderr.print(f"blobcast: note: {escape(note)}")
        for row in summary:
            first = ", ".join(f"{v:.4g}" for v in row["first"])
            stdout.print(f"{escape(row['blob'])} {row['shape']} min {format_error(row['min'])} "
                         f"max {format_error(row['max'])} [{first}{', ...' if len(first) else ''}]")
        if save:
            stdout.print(f"saved {len(blobs)} blobs and {len(given)} inputs to {escape(save)}")

    _run(body, json_output=json_output, debug=debug, memory_budget=memory_budget,
         files=[model, prototxt])


def _quiet_unraisable(unraisable, default=sys.unraisablehook) -> None:
    """A stop request raised where Python cannot propagate it (inside a weakref
    callback during an HDF5 write, say) is not printed as a traceback: the
    request is sticky, and the writer honours it at its next check."""
    if isinstance(unraisable.exc_value, Interrupted) and stop_requested() is not None:
        return
    default(unraisable)


def main() -> None:
    # SIGTERM and Ctrl-C end the process through the normal exit path, so a
    # conversion under way removes its temporary files (`python -m blobcast`
    # installs the handlers earlier still, before these imports).
    sys.unraisablehook = _quiet_unraisable
    install_stop_handlers()
    app(prog_name="blobcast")


__all__ = ["app", "main"]
