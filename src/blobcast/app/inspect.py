"""`inspect`: the facts of a file, as plain data (JSON-ready): what it
reads as (a net, a solver state) and what its format shows of it."""

from __future__ import annotations

import os

from .. import inspection
from ..errors import BlobcastError, FormatError
from ..io import converters, read_as, reading
from ..solver import SolverState


def inspect_file(path: str, *, prototxt: str | None = None, stats: bool = False,
                 solver: str | None = None, file_format: str | None = None,
                 target: str | None = None, modules: bool = False) -> dict:
    fmt = converters().detect_format(path, file_format)
    if prototxt is None and not solver and fmt.runs_by_itself:
        facts = runnable_file_facts(path, fmt, stats=stats, target=target, modules=modules)
        own = {}
    else:
        obj = read_as(path, fmt, prototxt)
        if isinstance(obj, SolverState):
            facts = _state_facts(obj, path, stats=stats, solver=solver, target=target)
        else:
            facts = _model_facts(obj, path, stats=stats, solver=solver, target=target,
                                 modules=modules)
        own = reading(path, lambda: fmt.inspect(path))
    facts["path"] = os.fspath(path)
    facts["file_bytes"] = os.path.getsize(path)
    facts.update(own)
    return facts


def _state_facts(state: SolverState, path: str, *, stats: bool, solver, target) -> dict:
    if target:
        raise BlobcastError("--target goes with a net, not a solver state", path)
    return inspection.state_facts(state, stats=stats, solver_path=solver)


def _model_facts(model, path: str, *, stats: bool, solver, target, modules: bool) -> dict:
    if solver:
        raise BlobcastError("--solver goes with a solver state file", path)
    facts = inspection.model_facts(model, stats=stats)
    if modules:
        if not model.has_architecture:
            raise BlobcastError("--modules needs the layer definitions; give --prototxt", path)
        facts["module_view"] = inspection.module_view(model)
    if model.training is not None:
        facts["training"] = inspection.training_facts(model, stats)
    if target:
        if not model.has_architecture:
            raise BlobcastError("--target needs the layer definitions; give --prototxt", path)
        facts["target"] = inspection.target_facts(model, target)
    return facts


def _caffe_form(fmt, path: str):
    """(the file's net as Caffe layers, None) where it has one, else (None,
    [each part without one, and why])."""
    try:
        return fmt.read(path), None
    except FormatError as error:  # e.g. nodes without a Caffe form, shapes not inferable
        return None, list(getattr(error, "problems", None) or [error.problem])


def runnable_file_facts(path: str, fmt, *, stats: bool = False, target: str | None = None,
                        modules: bool = False) -> dict:
    """A file that runs by itself (ONNX), as its format shows it (opsets,
    producer, nodes, ...); where every part has a Caffe form, the Caffe net
    too, as for a Caffe file. Parts without one are facts about the file, and
    make it unfit for any target."""
    own = reading(path, lambda: fmt.inspect(path))
    model, problems = reading(path, lambda: _caffe_form(fmt, path))
    if model is None:
        facts = {"kind": fmt.name, "format": fmt.name, **own,
                 "caffe": {"converts": False, "problems": problems}}
    else:
        facts = inspection.model_facts(model, stats=stats)
        facts.update((key, value) for key, value in own.items() if key != "name")
        facts["caffe"] = {"converts": True, "layers": len(model.layers)}
        if modules:
            facts["module_view"] = inspection.module_view(model)
        if model.training is not None:
            facts["training"] = inspection.training_facts(model, stats)
    facts["caffe_version"] = None  # the format's own versions are not a Caffe version
    if target:
        facts["target"] = inspection.target_facts(
            model, target, [f"no Caffe form: {p}" for p in problems or ()], rewrite=True)
    return facts
