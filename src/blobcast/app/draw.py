"""`draw`: the net as a Graphviz drawing, module instances collapsed or as
clusters, blob shapes on the edges, and with `against` each blob's error."""

from __future__ import annotations

import os
from dataclasses import replace

from ..draw import dot_text, write_drawing
from ..errors import FormatError
from ..fileio import check_apart, check_writable
from ..io import load
from ..model import Model
from ..shapes import known_shapes


def draw_file(source: str | os.PathLike, destination: str | os.PathLike, *, prototxt: str | None = None,
              expand: bool = False, against: str | None = None, options=None,
              overwrite: bool = False) -> dict:
    """Draw the net (DOT; SVG/PNG/PDF with Graphviz) with its module instances
    collapsed or, with `against`, each blob's error against that model (or
    .npz) colouring its edge and the first bad layer."""
    source, destination = os.fspath(source), os.fspath(destination)
    check_apart([source, prototxt, against], [destination])
    check_writable(destination, overwrite)
    model = _net_with_modules(source, prototxt)
    report = _compared(source, against, prototxt, options) if against is not None else None
    comparisons = {c.name: c for c in report.compared} if report is not None else {}
    kind = write_drawing(dot_text(model, expand=expand, shapes=known_shapes(model), comparisons=comparisons),
                         destination, overwrite)
    first = report.first_mismatch if report is not None else None
    return {"source": source, "destination": destination, "format": kind,
            "instances": len(model.modules), "layers": len(model.layers),
            "compared": len(comparisons), "first_mismatch": first.name if first else None}


def _net_with_modules(source: str, prototxt: str | None) -> Model:
    from ..module_discovery import discover_modules

    model = load(source, prototxt=prototxt)
    if not isinstance(model, Model) or not model.has_architecture:
        raise FormatError("drawing needs the layer definitions (give --prototxt with weights)", source)
    if not model.modules:
        discover_modules(model)
    return model



def _compared(source: str, against: str, prototxt: str | None, options):
    """Every blob of the net against the other model (colours only, so no
    float64 explanation of the differences)."""
    from ..check.verify import RunOptions, verify_files

    run = replace(options or RunOptions(), all_blobs=True, prototxt=prototxt)
    return verify_files(source, os.fspath(against), run, explain=False)
