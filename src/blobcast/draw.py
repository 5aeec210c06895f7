"""The net as a Graphviz graph, as Caffe's draw_net.py draws it, with module
instances as clusters (expanded) or one box each (collapsed), blob shapes on
the edges and, after a comparison, each blob's error as colour so the first
bad layer stands out.

DOT text is always written; SVG, PNG and PDF need Graphviz's `dot`
program, run with a time limit on the text blobcast made.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import replace

from .errors import BlobcastError, FormatError
from .model import Model

RENDERED = {".svg": "svg", ".png": "png", ".pdf": "pdf"}
DOT_SECONDS = 120


def _quote(text: str) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _first_bad_layer(model: Model, comparisons: dict):
    for layer in model.layers:
        if any(top in comparisons and not comparisons[top].passed for top in layer.tops):
            return layer
    return None


def _instance_lines(model: Model, instance_ids: dict, first_bad) -> list[str]:
    """Each top-level module instance as one node (collapsed drawings)."""
    lines = []
    for name, instance in model.modules.items():
        if instance.parent is None:
            params = ", ".join(f"{k}={v}" for k, v in instance.params.items())
            bad = first_bad is not None and name in first_bad.module_path
            style = ', style="filled,bold", fillcolor="#f4cccc"' if bad else \
                ', style="rounded,filled", fillcolor="#e8f0fe"'
            label = _quote(f"{name}\n{instance.module}({params})")
            lines.append(f"  {instance_ids[name]} [label={label}{style}];")
    return lines


def _edge_lines(model: Model, node_of, shapes: dict, comparisons: dict) -> list[str]:
    """Blobs as edges between the nodes that make and read them; net inputs
    and outputs as ellipses."""
    lines: list[str] = []
    producer: dict[str, str] = {}
    consumed: set[str] = set()
    drawn: set[tuple] = set()

    def blob_node(blob: str) -> str:
        producer[blob] = f"in_{len(producer)}"
        lines.append(f"  {producer[blob]} [shape=ellipse, label={_quote(blob)}];")
        return producer[blob]

    for index, layer in enumerate(model.layers):
        if layer.type == "Input":
            for top in layer.tops:
                blob_node(top)
            continue
        target = node_of(index)
        for bottom in layer.bottoms:
            consumed.add(bottom)
            source = producer.get(bottom) or blob_node(bottom)
            if source != target and (source, target, bottom) not in drawn:
                drawn.add((source, target, bottom))
                lines.append(f"  {source} -> {target} [{_edge(bottom, shapes, comparisons)}];")
        for top in layer.tops:
            producer[top] = target
    for number, blob in enumerate(name for name in producer if name not in consumed):
        if producer[blob].startswith("in_"):
            continue
        lines.append(f"  out{number} [shape=ellipse, label={_quote(blob)}];")
        lines.append(f"  {producer[blob]} -> out{number} [{_edge(blob, shapes, comparisons)}];")
    return lines


def dot_text(model: Model, *, expand: bool = False, shapes: dict | None = None,
             comparisons: dict | None = None) -> str:
    """DOT for the net. `comparisons`: blob -> BlobComparison (verify's)."""
    shapes, comparisons = shapes or {}, comparisons or {}
    first_bad = _first_bad_layer(model, comparisons)
    instance_ids = {name: f"m{i}" for i, name in enumerate(model.modules)}

    def node_of(index: int) -> str:
        layer = model.layers[index]
        if not expand and layer.module_path:
            return instance_ids[layer.module_path[0]]
        return f"l{index}"

    lines = ["digraph net {", "  rankdir=TB;", '  node [shape=box, fontname="Helvetica", fontsize=10];',
             '  edge [fontname="Helvetica", fontsize=9];']
    if model.name:
        lines.append(f"  label={_quote(model.name)}; labelloc=t;")
    layer_lines: dict[str | None, list[str]] = {}
    for index, layer in enumerate(model.layers):
        if layer.type == "Input" or (layer.module_path and not expand):
            continue  # inputs are drawn with their blob; collapsed layers as their instance
        style = ', style=filled, fillcolor="#f4cccc", penwidth=2' if layer is first_bad else ""
        owner = layer.module_path[-1] if layer.module_path else None
        layer_lines.setdefault(owner, []).append(
            f"  {node_of(index)} [label={_quote(layer.name + chr(10) + layer.type)}{style}];")
    if not expand:
        lines += _instance_lines(model, instance_ids, first_bad)
    lines += layer_lines.get(None, [])
    if expand:
        lines += _clusters(model, None, layer_lines, "  ")
    lines += _edge_lines(model, node_of, shapes, comparisons)
    return "\n".join(lines + ["}"]) + "\n"


def _edge(blob: str, shapes: dict, comparisons: dict) -> str:
    label = blob + (" " + "x".join(str(d) for d in shapes[blob]) if blob in shapes else "")
    comparison = comparisons.get(blob)
    if comparison is None:
        return f"label={_quote(label)}"
    colour = "#2e7d32" if comparison.passed else "#c62828"
    label += f"\\nmax rel err {comparison.max_rel_error:.2g}"
    return f"label={_quote(label)}, color={_quote(colour)}, fontcolor={_quote(colour)}, penwidth=2"


def _clusters(model: Model, parent: str | None, layer_lines: dict, indent: str,
              children: dict | None = None) -> list[str]:
    """Each instance as a cluster inside its parent's: the instances are
    grouped by parent once, so the drawing is linear in their number."""
    if children is None:
        children = {}
        for number, (name, instance) in enumerate(model.modules.items()):
            children.setdefault(instance.parent, []).append((number, name, instance))
    lines = []
    for number, name, instance in children.get(parent, []):
        params = ", ".join(f"{k}={v}" for k, v in instance.params.items())
        lines.append(f"{indent}subgraph cluster_{number} {{")
        lines.append(f"{indent}  label={_quote(f'{name}: {instance.module}({params})')}; "
                     'style="rounded,filled"; fillcolor="#f3f6fc";')
        lines += [indent + line for line in layer_lines.get(name, [])]
        lines += _clusters(model, name, layer_lines, indent + "  ", children)
        lines.append(f"{indent}}}")
    return lines


def write_drawing(text: str, path: str, overwrite: bool = False) -> str:
    """Write DOT text, or what Graphviz's dot renders of it; returns the format
    written. An existing file is replaced only with `overwrite`."""
    from .fileio import atomic_destination

    suffix = os.path.splitext(path)[1].lower()
    kind = RENDERED.get(suffix)
    if kind is None:
        with atomic_destination(path, overwrite=overwrite) as temporary:
            with open(temporary, "w", encoding="utf-8") as handle:
                handle.write(text)
        return "dot"
    program = shutil.which("dot")
    if program is None:
        raise BlobcastError(f"drawing {suffix} needs Graphviz's dot program (not found); install "
                            "graphviz, or write .dot text", path)
    with atomic_destination(path, overwrite=overwrite) as temporary:
        try:
            subprocess.run([program, f"-T{kind}", "-o", temporary], input=text.encode("utf-8"),
                           check=True, capture_output=True, timeout=DOT_SECONDS)
        except subprocess.TimeoutExpired:
            raise BlobcastError(f"Graphviz's dot took over {DOT_SECONDS} s", path) from None
        except subprocess.CalledProcessError as error:
            detail = error.stderr.decode("utf-8", "replace").strip().splitlines()
            raise BlobcastError("Graphviz's dot failed: " + (detail[-1] if detail else "no message"),
                                path) from None
    return kind


def draw_file(source: str | os.PathLike, destination: str | os.PathLike, *, prototxt: str | None = None,
         expand: bool = False, against: str | None = None, options=None, overwrite: bool = False) -> dict:
    """Draw the net (DOT; SVG/PNG/PDF with Graphviz) with its module instances
    collapsed or, with `expand`, as clusters; with `against`, each blob's error
    against that model (or .npz) colours its edge and the first bad layer."""
    from .api import load
    from .engine import blob_shapes
    from .fileio import check_apart, check_writable
    from .module_discovery import discover_modules

    source, destination = os.fspath(source), os.fspath(destination)
    check_apart([source, prototxt, against], [destination])
    check_writable(destination, overwrite)
    model = load(source, prototxt=prototxt)
    if not isinstance(model, Model) or not model.has_architecture:
        raise FormatError("drawing needs the layer definitions (give --prototxt with weights)", source)
    if not model.modules:
        discover_modules(model)
    try:
        shapes = blob_shapes(model, skip_unrunnable=True)[1]
    except BlobcastError:
        shapes = {}
    comparisons, report = {}, None
    if against is not None:
        from .check.verify import RunOptions, verify_files

        run = replace(options or RunOptions(), all_blobs=True, prototxt=prototxt)
        report = verify_files(source, os.fspath(against), run, explain=False)  # colours only
        comparisons = {c.name: c for c in report.compared}
    kind = write_drawing(dot_text(model, expand=expand, shapes=shapes, comparisons=comparisons),
                         destination, overwrite)
    first = report.first_mismatch if report is not None else None
    return {"source": source, "destination": destination, "format": kind,
            "instances": len(model.modules), "layers": len(model.layers),
            "compared": len(comparisons), "first_mismatch": first.name if first else None}
