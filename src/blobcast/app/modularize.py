"""`modularize`: a flat net's repeated blocks found, written once as
modules, and checked to flatten back to the same net before it is written."""

from __future__ import annotations

import os

from ..check.compare import model_differences
from ..errors import BlobcastError, CheckFailed, FormatError
from ..fileio import atomic_destination, check_apart
from ..io import converters, load
from ..model import Model


def modularize(source: str | os.PathLike, destination: str | os.PathLike, *,
               prototxt: str | None = None, overwrite: bool = False) -> dict:
    """Write the modular form of a flat net: its repeated blocks found and
    written once as modules, each occurrence an instance. The text is
    flattened again and must give the same layers and settings before it is
    written. Returns what was found."""
    source, destination = os.fspath(source), os.fspath(destination)
    check_apart([source, prototxt], [destination])
    model = _flat_net(source, prototxt)
    found, text = _modular_text(model)
    _check_flattens_back(model, text, destination)
    with atomic_destination(destination, overwrite=overwrite) as temporary:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
    return _report(model, found, text, source, destination)


def _flat_net(source: str, prototxt: str | None) -> Model:
    model = load(source, prototxt=prototxt)
    if not isinstance(model, Model) or not model.has_architecture:
        raise FormatError("modularize needs a net with its layer definitions (give --prototxt "
                          "with a weights file)", source)
    if model.modules:
        raise BlobcastError("the net is already written with modules", source)
    return model


def _modular_text(model: Model):
    from ..converters.modular_writer import modular_text
    from ..module_discovery import discover_modules

    found = discover_modules(model)
    return found, modular_text(model, found)


def _check_flattens_back(model: Model, text: str, destination: str) -> None:
    back = converters().prototxt.flatten_modular(text, destination)
    problems = model_differences(model, back, tensors=False)
    if problems:
        raise CheckFailed("the modular form does not flatten back to the net: " + "; ".join(problems[:3]))


def _report(model: Model, found, text: str, source: str, destination: str) -> dict:
    return {"source": source, "destination": destination,
            "modules": [{"module": m.name, "instances": m.instance_names, "params": list(m.params),
                         "layers": len(m.regions[0].layers)} for m in found],
            "layers": len(model.layers),
            "lines": {"flat": len(converters().prototxt.architecture_text(model).splitlines()),
                      "modular": len(text.splitlines())}}
