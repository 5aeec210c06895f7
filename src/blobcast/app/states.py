"""A solver state through a conversion: joined to its net and solver for
ONNX's training info, and restored from it with the weights it names."""

from __future__ import annotations

import os
import time

from ..errors import BlobcastError, FormatError, about
from ..fileio import OutputGroup, atomic_destination, check_distinct
from ..io import converters, load, reading, write_as
from ..model import Model
from ..solver import SolverState
from .report import ConversionReport


def with_training(state: SolverState, weights: str | None, prototxt: str | None,
                  solver: str | None, source: str) -> Model:
    """The training net with its weights, carrying the state and its solver."""
    from ..training import Training

    if solver is None:
        raise BlobcastError("a training step needs the solver's settings: give the solver "
                            "with --solver solver.prototxt")
    weights = weights if weights is not None else state.require_weights()
    check_distinct(source, weights)
    found = converters()
    model = load(weights, prototxt=prototxt, format=found.weights_format(weights))
    settings = reading(solver, lambda: found.prototxt.read_solver(solver))
    model.training = Training(settings, state)
    with about(source):
        model.training.check(model, source)
    return model


def write_weights(model: Model, path: str, overwrite: bool, group: OutputGroup) -> ConversionReport:
    """The weights of a model that carried its training, beside the restored state."""
    started = time.perf_counter()
    fmt = converters().output_format(path, None)
    if not fmt.holds_weights or fmt.holds_solver_state:
        raise FormatError("--weights takes a .caffemodel or .caffemodel.h5", path)
    with atomic_destination(path, overwrite=overwrite, group=group) as temporary:
        write_as(model, temporary, fmt)
        check, _ = reading(temporary, lambda: fmt.verify_written(model, temporary))
    report = ConversionReport(model.training.state.source_path, path, "onnx", fmt.name, check=check,
                              layers=len(model.layers), tensors=len(model.owned_params()),
                              bytes=model.nbytes)
    report.seconds = time.perf_counter() - started
    return report


def _plain_relative(folder: str) -> bool:
    """A relative folder without '..' parts: all of a recorded path that may travel."""
    return not os.path.isabs(folder) and ".." not in folder.replace("\\", "/").split("/")


def learned_net_for(old_learned_net: str, new_weights: str, destination: str) -> str:
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
